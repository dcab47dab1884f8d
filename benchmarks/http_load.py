"""Kept for one release: the HTTP benchmark is ``benchmarks/http.py`` (issue 14 names it so).

    python benchmarks/http_load.py ...   runs ``python benchmarks/http.py ...``
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]
sys.path.insert(0, str(ROOT))

from benchmarks.http import main  # noqa: E402

__all__ = ["main"]

if __name__ == "__main__":
    main()
