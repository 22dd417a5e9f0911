"""Keep a bench folder's results without its weights: every finished run's config, chosen and
last epoch, history and validation packs, in the same layout, so the tables can be rebuilt
(`mkcnet bench --collect`) and, copied back, the bench counts the runs as done.

    python scripts/archive_bench.py runs/compare-ct benchmarks/results/compare-ct
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

KEPT = ("config.json", "best.json", "last.json", "history.csv", "history.jsonl")


def archive(bench: Path, target: Path) -> list[Path]:
    """Copy each finished run (an eval-*/predictions.csv beside its history) of `bench` to `target`."""
    copied = []
    for pack in sorted(bench.glob("runs/*/*/seed*/eval-*/predictions.csv")):
        run = pack.parent.parent
        out = target / run.relative_to(bench)
        for name in KEPT:
            if (run / name).is_file():
                out.mkdir(parents=True, exist_ok=True)
                shutil.copy2(run / name, out / name)
        shutil.copytree(pack.parent, out / pack.parent.name, dirs_exist_ok=True)
        copied.append(out)
    return copied


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    for folder in archive(Path(sys.argv[1]), Path(sys.argv[2])):
        print(f"kept {folder}")
