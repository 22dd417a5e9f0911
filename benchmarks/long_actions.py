"""Long actions (issue 20): the first UMAP of a pack, "Add run" on Out-of-distribution, and
`mkcnet ood` on two 40-image packs, each in a fresh process.

    python benchmarks/long_actions.py [--repeats 5] [--work DIR] [--compare OTHER_CHECKOUT] [--cold]

Set-up, once, kept in --work (default: a folder under the system's temporary one): 120 synthetic
fundus images (`mkcnet synth`), and their 40-image val split evaluated by both bundled
synth-fundus models (`mkcnet evaluate`): two 40-image packs without stored coordinates or curves,
as a visitor's evaluated pack or an added run is.

Measures (seconds; median and min–max of --repeats fresh processes):
  - first UMAP, bundled pack: `PackStore.embedding(<bundled>, "diagnosis", "umap")` in a new
    process (the bundle's stored coordinates);
  - first UMAP, added pack: `PackStore.add_run(pack)` then `.embedding(key, "diagnosis", "umap")`,
    its `import umap` and numba compilation (or loading from numba's disk cache) included; the
    process's own imports (the app has them by then) not;
  - the same after the app's start-up warm-up (`warm_umap`, where the code has it): what a
    visitor waits for once the server has been up a few seconds;
  - OOD add-run: `PackStore.add_run(pack)` + `.ood_curves(key)`: the "Add run" button's work;
  - `mkcnet ood A B --out …`: the whole process, PNGs included (they need a Chromium).

With --compare DIR, the same measures run on the code in DIR too (e.g. a `git worktree` of an
older commit), turn by turn with this checkout's (A B A B …, so a burst of load from another
process hits both alike), and the table gets the ratio this/other. With --cold, every UMAP
process gets an empty NUMBA_CACHE_DIR: the first process on a fresh machine (numba compiles
pynndescent's and umap's functions), not the usual case.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Run in a fresh process with the code under test first on sys.path; prints one JSON object.
CHILD = r"""
import json, sys, time
which, pack = sys.argv[1], sys.argv[2]
from mkcnet.workbench.imaging import ImageCache
from mkcnet.workbench.packs import PackStore
from mkcnet.workbench.zoo import ModelZoo
store = PackStore(ModelZoo(), ImageCache())
if which == "warm":
    try:
        from mkcnet.analysis.embedding import warm_umap
    except ImportError:
        print(json.dumps({"seconds": None}))
        sys.exit(0)
    warm_umap()
start = time.perf_counter()
if which == "bundled":
    store.embedding(pack, "diagnosis", "umap")
elif which in ("umap", "warm"):
    store.embedding(store.add_run(pack), "diagnosis", "umap")
elif which == "ood":
    store.ood_curves(store.add_run(pack))
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def run(cmd: list[str], code: Path, env: dict | None = None, cwd: Path | None = None) -> tuple[float, str]:
    """(wall seconds, stdout) of one process whose `mkcnet` is the one in `code`."""
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(code), "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=cwd or code, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])}… failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return wall, done.stdout


def mkcnet(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from mkcnet.cli import main; sys.exit(main())", *args]


def prepare(work: Path) -> tuple[Path, Path]:
    """Two 40-image packs of the bundled synth-fundus models (made once)."""
    packs = work / "packs"
    if not (packs / "vanilla" / "predictions.csv").is_file():
        data = work / "data"
        if not (data / "val.csv").is_file():
            run(mkcnet("synth", str(data), "--n", "120", "--size", "256", "--seed", "3", "--split", "0.34,0.33,0.33",
                       "--overwrite"), REPO)
        for method in ("mkcnet", "vanilla"):
            run(mkcnet("evaluate", str(REPO / "checkpoints" / f"synth-fundus-{method}"), str(data / "val.csv"),
                       "--out", str(packs / method), "--quiet"), REPO)
    return packs / "mkcnet", packs / "vanilla"


def measures(a: Path, b: Path, work: Path, cold: bool) -> dict:
    """name → function(code) → seconds."""
    def child(which: str, pack: str):
        def measure(code: Path) -> float | None:
            env = {}
            if cold and which in ("umap", "bundled"):
                env["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="numba-", dir=work)
            return json.loads(run([sys.executable, "-c", CHILD, which, pack], code, env)[1])["seconds"]
        return measure

    def ood(code: Path) -> float:
        return run(mkcnet("ood", str(a), str(b), "--out", str(work / "ood")), code)[0]

    return {
        "first UMAP, bundled pack (in process)": child("bundled", "synth-fundus-mkcnet"),
        "first UMAP, 40-image added pack (in process)": child("umap", str(a)),
        "UMAP after the app's warm-up (in process)": child("warm", str(a)),
        "OOD add-run: add_run + ood_curves (in process)": child("ood", str(a)),
        "`mkcnet ood` on two 40-image packs (whole process)": ood,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "mkcnet-long-actions")
    p.add_argument("--compare", type=Path, metavar="CHECKOUT", help="also measure the code in this folder")
    p.add_argument("--cold", action="store_true", help="an empty numba cache for every UMAP process")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    a, b = prepare(args.work)
    codes = {"this": REPO, **({"other": args.compare.resolve()} if args.compare else {})}
    times: dict[tuple[str, str], list[float]] = {}
    for name, measure in measures(a, b, args.work, args.cold).items():
        for _ in range(args.repeats):
            for label, code in codes.items():  # turn by turn
                seconds = measure(code)
                if seconds is not None:
                    times.setdefault((name, label), []).append(seconds)
    print(f"# Long actions ({os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at the end"
          f"{', cold numba cache' if args.cold else ''}; median and min–max of {args.repeats} fresh processes, s)\n")
    head = " | ".join(f"{label} ({codes[label].name})" for label in codes)
    print(f"| action | {head} |" + (" this/other |" if len(codes) > 1 else ""))
    print("|---|" + "---:|" * (len(codes) + (len(codes) > 1)))

    def cell(values: list[float] | None) -> str:
        return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})" if values else "–"

    for name in measures(a, b, args.work, args.cold):
        row = [cell(times.get((name, label))) for label in codes]
        if len(codes) > 1:
            this, other = times.get((name, "this")), times.get((name, "other"))
            row.append(f"{statistics.median(this) / statistics.median(other):.3f}" if this and other else "–")
        print(f"| {name} | " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
