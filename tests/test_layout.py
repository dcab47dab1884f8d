"""The tests mirror the library's modules, as tests/README.md says: every library module has
its test module (``datapipe_django/a/b.py`` → ``tests/test_a_b.py``) or a row of the README's
first table naming the test modules that cover it and why; every test module is a library
module's or has a row of the README's second table. No stale rows either way."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ROOT / "datapipe_django"
TESTS = ROOT / "tests"
README = (TESTS / "README.md").read_text()


def mirror_name(module: Path) -> str:
    """``datapipe_django/specs/paths.py`` → ``test_specs_paths.py`` (see tests/README.md)."""
    parts = list(module.relative_to(LIBRARY).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    if parts[:2] == ["management", "commands"]:
        parts[:2] = ["command"]
    return "test_" + "_".join(part.lstrip("_") for part in parts) + ".py"


def library_modules() -> list[Path]:
    """Every module of the library but its migrations."""
    return sorted(p for p in LIBRARY.rglob("*.py")
                  if "migrations" not in p.relative_to(LIBRARY).parts)


def table(heading: str) -> dict[str, list[str]]:
    """The rows of the README's table under ``heading``: first cell → the other cells."""
    section = README.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 3:
            name = cells[0].strip("`")
            assert name not in rows, f"tests/README.md lists {name} twice"
            rows[name] = cells[1:]
    assert rows, f"tests/README.md has no table under {heading!r}"
    return rows


COVERED = table("Library modules covered by another test module")
OTHERS = table("Test modules of no single library module")


def test_the_naming_rule() -> None:
    assert mirror_name(LIBRARY / "chain.py") == "test_chain.py"
    assert mirror_name(LIBRARY / "specs" / "paths.py") == "test_specs_paths.py"
    assert mirror_name(LIBRARY / "_internal" / "breaker.py") == "test_internal_breaker.py"
    assert mirror_name(LIBRARY / "cache" / "__init__.py") == "test_cache.py"
    assert mirror_name(LIBRARY / "management" / "commands" / "datapipe.py") == (
        "test_command_datapipe.py")


def test_every_library_module_has_its_test_module_or_says_which_covers_it() -> None:
    missing, stale, bad = [], [], []
    for module in library_modules():
        name = str(module.relative_to(ROOT))
        own = (TESTS / mirror_name(module)).exists()
        row = COVERED.get(name)
        if own and row:
            stale.append(f"{name} has tests/{mirror_name(module)}: drop its row")
        elif not own and not row:
            missing.append(f"{name}: add tests/{mirror_name(module)}, or a row to "
                           f"tests/README.md saying which test module covers it and why")
        elif row:
            covering, why = row
            named = re.findall(r"`(tests/test_\w+\.py)`", covering)
            if not named or not why:
                bad.append(f"{name}: name the covering test module(s) and say why")
            bad += [f"{name}: {path} does not exist" for path in named
                    if not (ROOT / path).exists()]
    gone = [name for name in COVERED if not (ROOT / name).exists()]
    assert not missing + stale + bad, "\n".join(missing + stale + bad)
    assert not gone, f"tests/README.md covers modules that no longer exist: {gone}"


def test_every_test_module_is_a_library_modules_or_listed() -> None:
    mirrors = {mirror_name(m) for m in library_modules()}
    unlisted = [p.name for p in sorted(TESTS.glob("test_*.py"))
                if p.name not in mirrors and f"tests/{p.name}" not in OTHERS]
    assert not unlisted, (f"test modules named after no library module: {unlisted}; rename "
                          f"them after the module they test, or list them in tests/README.md")
    gone = [name for name in OTHERS if not (ROOT / name).exists()]
    assert not gone, f"tests/README.md lists test modules that no longer exist: {gone}"
    doubled = [name for name in OTHERS if name.removeprefix("tests/") in mirrors]
    assert not doubled, f"these are library modules' test modules, not others: {doubled}"
