"""Print the figures of the last reliability run (``.work/reliability-figures.json``).

    python -m benchmarks.reliability_report

Exits 1 when the file is missing or a figure that must be zero is not.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.support.reliability import FIGURES_FILE, MUST_BE_ZERO, figures_table


def main(path: Path = FIGURES_FILE) -> int:
    if not path.exists():
        print(f"no figures at {path}: run `pytest -m reliability` first", file=sys.stderr)
        return 1
    data = json.loads(path.read_text())
    print("reliability figures")
    for line in figures_table(data):
        print(line)
    bad = [name for name in MUST_BE_ZERO if (data.get(name) or {}).get("total", 0)]
    if bad:
        print(f"FAILED: {', '.join(bad)} must be 0", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
