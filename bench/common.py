"""Small helpers shared by the benches: data paths, a table printer, atomic JSON results."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
# The packages are installed; this only matters because two bench scripts share an app's name
# (bench/customer_service.py, bench/recommender.py): run as scripts, their folder comes first on
# sys.path and would shadow the app package, so the apps' folder goes in front of it.
for _p in (ROOT / "shared", ROOT / "apps"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from verticore.paths import data_dir  # noqa: E402

#: Third-party datasets with fixed splits (never copied into the repo).
DATA = data_dir()
RESULTS = ROOT / "bench" / "results"
#: Bench-trained artifacts (gitignored).
ARTIFACTS = RESULTS / "artifacts"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a plain aligned table."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths))  # noqa: E731
    print(line(cells[0]))
    print("  ".join("-" * w for w in widths))
    for r in cells[1:]:
        print(line(r))


def write_result(name: str, data: dict[str, Any]) -> Path:
    """Write ``bench/results/<name>.json`` atomically and say where."""
    from verticore.io import atomic_write_json

    path = atomic_write_json(RESULTS / f"{name}.json", data)
    print(f"wrote {path.relative_to(ROOT)}")
    return path
