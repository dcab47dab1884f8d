"""The reference pages agree with the code: every ``DATAPIPE`` key with its default
(docs/settings.md against ``conf.DEFAULTS``), every system check id the library can emit
(docs/checks.md against the library's source), and every docs page in the site's nav."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest
import yaml  # PyYAML, with mkdocs (the dev extra)

from datapipe_django.conf import DEFAULTS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
LIBRARY = ROOT / "datapipe_django"

#: ``| `KEY` | `default` | meaning | where used |``
SETTING_ROW = re.compile(r"^\|\s*`([A-Z][A-Z0-9_]*)`\s*\|\s*`([^`]*)`\s*\|(.*)\|\s*$")
#: ``| `datapipe_django.E001` | error | what | where |``
CHECK_ROW = re.compile(r"^\|\s*`datapipe_django\.([A-Z]\d{3})`\s*\|(.*)\|\s*$")
CHECK_ID = re.compile(r"datapipe_django\.([A-Z]\d{3})\b")


def table_rows(page: str, pattern: re.Pattern[str]) -> list[re.Match[str]]:
    return [m for line in (DOCS / page).read_text().splitlines()
            if (m := pattern.match(line))]


def test_the_settings_page_lists_every_key_once_with_its_default():
    rows = table_rows("settings.md", SETTING_ROW)
    keys = [m.group(1) for m in rows]
    missing = sorted(set(DEFAULTS) - set(keys))
    unknown = sorted(set(keys) - set(DEFAULTS))
    assert not missing, f"docs/settings.md lacks a row for {missing} (conf.DEFAULTS has them)"
    assert not unknown, f"docs/settings.md documents {unknown}, which conf.DEFAULTS lacks"
    assert len(keys) == len(set(keys)), "a key has two rows in docs/settings.md"
    for m in rows:
        key, default = m.group(1), ast.literal_eval(m.group(2))
        assert default == DEFAULTS[key] and type(default) is type(DEFAULTS[key]), (
            f"docs/settings.md gives {key} the default {m.group(2)}; conf.DEFAULTS has "
            f"{DEFAULTS[key]!r}")
        meaning, where = (cell.strip() for cell in m.group(3).split("|", 1))
        assert meaning and where, f"docs/settings.md: {key} needs its meaning and where used"


def emitted_check_ids() -> dict[str, list[str]]:
    """Every ``datapipe_django.X000`` id written in the library's source, with the files."""
    found: dict[str, list[str]] = {}
    for path in sorted(LIBRARY.rglob("*.py")):
        text = path.read_text()
        # An id built at run time could not be found here: the ids must be literals.
        assert not re.search(r"""\bid=f["']datapipe_django\.""", text), (
            f"{path}: write check ids as literals, so that docs/checks.md can be checked")
        for check_id in CHECK_ID.findall(text):
            found.setdefault(check_id, []).append(str(path.relative_to(ROOT)))
    return found


def test_the_checks_page_lists_every_check_id_the_library_emits():
    emitted = emitted_check_ids()
    assert "E001" in emitted and "W001" in emitted  # the scan finds the ids it must
    rows = table_rows("checks.md", CHECK_ROW)
    documented = [m.group(1) for m in rows]
    missing = sorted(set(emitted) - set(documented))
    stale = sorted(set(documented) - set(emitted))
    assert not missing, "docs/checks.md lacks " + ", ".join(
        f"datapipe_django.{i} (used in {', '.join(sorted(set(emitted[i])))})" for i in missing)
    assert not stale, f"docs/checks.md lists ids no code emits: {stale}"
    assert len(documented) == len(set(documented)), "an id has two rows in docs/checks.md"
    for m in rows:
        level, what, where = (cell.strip() for cell in m.group(2).split("|", 2))
        expected = {"E": "error", "W": "warning", "C": "critical", "I": "info"}[m.group(1)[0]]
        assert level.startswith(expected), f"{m.group(1)} is a{'n' * (expected[0] in 'ei')} " \
                                           f"{expected}, docs/checks.md says {level!r}"
        assert what and where


def ids_given_to_check_messages() -> set[str]:
    """The ids the library's check messages are built with (``id="datapipe_django.X000"``)."""
    found = set()
    for path in sorted(LIBRARY.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "id" and isinstance(
                    node.value, ast.Constant) and str(node.value.value).startswith(
                    "datapipe_django."):
                found.add(node.value.value)
    return found


def test_the_check_table_holds_every_id_the_library_emits_and_no_other():
    from datapipe_django.checks import CHECKS

    emitted = ids_given_to_check_messages()
    assert {"datapipe_django.E001", "datapipe_django.W017"} <= emitted  # the scan finds them
    assert set(CHECKS) == emitted, (sorted(emitted - set(CHECKS)), sorted(set(CHECKS) - emitted))
    assert all(meaning and "\n" not in meaning for meaning in CHECKS.values())


@pytest.mark.parametrize("page", ["checks.md", "operations.md"])
def test_the_checks_and_operations_pages_list_every_id_of_the_table_and_no_other(page):
    from datapipe_django.checks import CHECKS

    rows = [f"datapipe_django.{m.group(1)}" for m in table_rows(page, CHECK_ROW)]
    assert len(rows) == len(set(rows)), f"an id has two rows in docs/{page}"
    assert set(rows) == set(CHECKS), (f"docs/{page}: lacks {sorted(set(CHECKS) - set(rows))}, "
                                      f"lists {sorted(set(rows) - set(CHECKS))} too")
    named = {f"datapipe_django.{i}" for i in CHECK_ID.findall((DOCS / page).read_text())}
    assert named <= set(CHECKS), f"docs/{page} names {sorted(named - set(CHECKS))}"


def test_the_operations_page_gives_each_id_the_meaning_of_the_table():
    from datapipe_django.checks import CHECKS

    meanings = {f"datapipe_django.{m.group(1)}": m.group(2).strip(" |")
                for m in table_rows("operations.md", CHECK_ROW)}
    assert meanings == CHECKS


def test_check_ids_named_anywhere_in_the_docs_exist():
    emitted = emitted_check_ids()
    for page in sorted(DOCS.glob("*.md")):
        for check_id in CHECK_ID.findall(page.read_text()):
            assert check_id in emitted, f"docs/{page.name} names datapipe_django.{check_id}, " \
                                        f"which no code emits"


def nav_pages(node: object) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [p for value in node.values() for p in nav_pages(value)]
    if isinstance(node, list):
        return [p for item in node for p in nav_pages(item)]
    return []


def test_every_docs_page_is_in_the_site_nav():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    listed = nav_pages(config["nav"])
    pages = sorted(p.name for p in DOCS.glob("*.md"))
    assert sorted(listed) == pages
    assert config["validation"]["nav"]["omitted_files"] == "warn"  # --strict fails on one


PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.M | re.S)


@pytest.mark.parametrize("page", sorted([*DOCS.glob("*.md"), ROOT / "README.md",
                                         ROOT / "CONTRIBUTING.md"]), ids=lambda p: p.name)
def test_every_python_block_parses_and_its_library_imports_exist(page):
    """A renamed or removed public name shows up here: every ``python`` block of the docs is
    valid Python, and every name it imports from datapipe_django can be imported."""
    for i, code in enumerate(PYTHON_BLOCK.findall(page.read_text()), 1):
        tree = ast.parse(code, f"{page.name} block {i}")  # a SyntaxError names the block
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    "datapipe_django"):
                module = importlib.import_module(node.module)
                missing = [a.name for a in node.names if not hasattr(module, a.name)]
                assert not missing, f"{page.name} block {i} imports {missing} from " \
                                    f"{node.module}, which has no such names"
