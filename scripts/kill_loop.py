"""Kill a tiny training run again and again (SIGKILL), resume it each time, and check that it ends
bit-identical to a run never killed, with no temporary file left behind.

    python scripts/kill_loop.py --kills 20 --work /tmp/kill-loop

The data are the repository's own synthetic fundus images (`mkcnet synth`, 48 images of 64 px),
the run a tiny `mkcnet` (ResNet-10-T, 32 px, Stage II every batch) of `--epochs` epochs with a
validation split (so the best checkpoint moves, and calibration runs at the end). Each kill falls
either at a random moment of its epochs (up to 2.5 epochs after it has written its config.json),
or the moment a chosen one of its writes is seen in progress (the k-th temporary file, k = 1..6,
in the run folder: config.json, then an epoch's history.csv, best, last and state). After
the kills, one last `--resume` finishes the run; then every tensor of `state`, `last` and `best`
is compared with the straight run's, and the history rows (but their minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]


def mkcnet(*args: str) -> list[str]:
    return [sys.executable, "-m", "mkcnet", *args]


def temporaries(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir() if "tmp" in p.name) if run.is_dir() else []


def holder(run: Path) -> str:
    try:
        return (run / ".lock").read_text().strip()
    except OSError:
        return ""


def inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except OSError:
        return None


def kill_once(command: list[str], run: Path, env: dict[str, str], rng: random.Random, epoch_seconds: float) -> dict:
    """Start the run, kill it (SIGKILL) at a random moment or during a chosen write; what happened."""
    before = set(temporaries(run))  # a previous kill's, which this start removes
    config = inode(run / "config.json")
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    mode = rng.choice(["moment", "write"])
    record = {"mode": mode}
    while holder(run) != str(process.pid):  # started: the lock is its, so the folder is its to write
        if process.poll() is not None:
            return record | {"killed": False, "exit": process.returncode, "stderr": process.stderr.read()[-400:].decode()}
        time.sleep(0.005)
    if mode == "moment":  # from the start of its epochs (its config.json written) to 2.5 epochs later
        while inode(run / "config.json") in (None, config) and process.poll() is None:
            time.sleep(0.005)
        deadline = time.monotonic() + rng.uniform(0, 2.5 * epoch_seconds)
        while time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.005)
    else:  # the k-th temporary file seen: one of an epoch's writes (history.csv, best, last, state)
        target, seen, previous = rng.randint(1, 6), 0, before
        while process.poll() is None:
            now = set(temporaries(run))
            seen += len(now - previous)
            previous = now
            if seen >= target:
                record["during"] = sorted(now)
                break
            time.sleep(0.002)
    if process.poll() is not None:
        return record | {"killed": False, "exit": process.returncode}
    process.send_signal(signal.SIGKILL)
    process.wait()
    return record | {"killed": True, "left": sorted(set(temporaries(run)) - before)}


def compare(straight: Path, resumed: Path) -> list[str]:
    """Every difference between the two runs' tensors and history rows (minutes aside)."""
    differences = []
    for name in ("state", "last", "best"):
        a, b = (load_file(str(d / f"{name}.safetensors")) for d in (straight, resumed))
        differences += [f"{name}: keys differ" for _ in range(set(a) != set(b))]
        differences += [f"{name}.{k}" for k in sorted(set(a) & set(b)) if not torch.equal(a[k], b[k])]
    rows = [[{k: v for k, v in json.loads(line).items() if k != "minutes"}
             for line in (d / "history.jsonl").read_text().splitlines()] for d in (straight, resumed)]
    differences += [f"history row {i + 1}" for i, (a, b) in enumerate(zip(*rows)) if a != b]
    differences += ["history length"] if len(rows[0]) != len(rows[1]) else []
    return differences


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mkcnet-kill-loop"))
    args = parser.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MKCNET_CACHE": str(work / "cache"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    data = work / "data"
    if not (data / "train.csv").is_file():
        subprocess.run(mkcnet("synth", str(data), "--n", "48", "--size", "64", "--seed", "0", "--workers", "1"),
                   cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
    flags = ["--dataset", "synth-fundus", "--root", str(data), "--method", "mkcnet", "--backbone", "resnet10t",
             "--meta-backbone", "resnet10t", "--image-size", "32", "--batch-size", "8", "--meta-every", "1",
             "--epochs", str(args.epochs), "--seed", "0", "--quiet", "--device", "cpu"]
    straight, killed = work / "straight", work / "killed"
    for run in (straight, killed):
        if run.exists():
            subprocess.run(["rm", "-rf", str(run)], check=True)
    start = time.monotonic()
    subprocess.run(mkcnet("train", *flags, "--out", str(straight)), cwd=REPO, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    straight_seconds = time.monotonic() - start
    minutes = json.loads((straight / "history.jsonl").read_text().splitlines()[-1])["minutes"]
    epoch_seconds = 60 * minutes / args.epochs
    rng = random.Random(args.seed)
    events = []
    while sum(e["killed"] for e in events) < args.kills:
        resume = ["--resume"] if (killed / "state.safetensors").is_file() else ["--overwrite"]
        event = kill_once(mkcnet("train", *flags, "--out", str(killed), *resume), killed, env, rng, epoch_seconds)
        event["history_rows"] = len((killed / "history.jsonl").read_text().splitlines()) if (
            killed / "history.jsonl").is_file() else 0
        events.append(event)
        print(json.dumps(event), flush=True)
        if not event["killed"] and event.get("exit") != 0:
            print(f"a run ended on its own with exit {event.get('exit')}: stopping", file=sys.stderr)
            return 1
        if not event["killed"]:
            subprocess.run(["rm", "-rf", str(killed)], check=True)  # finished before a kill: start again
    resume = ["--resume"] if (killed / "state.safetensors").is_file() else ["--overwrite"]
    final = subprocess.run(mkcnet("train", *flags, "--out", str(killed), *resume), cwd=REPO, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    differences = compare(straight, killed) if final.returncode == 0 else ["the final resume failed: " + final.stderr]
    kills = [e for e in events if e["killed"]]
    report = {
        "kills": len(kills),
        "kills_at_a_moment": sum(e["mode"] == "moment" for e in kills),
        "kills_during_a_write": sum(e["mode"] == "write" for e in kills),
        "temporaries_left_by_kills": sum(len(e["left"]) for e in kills),  # each removed by the next start
        "temporaries_left_at_the_end": temporaries(killed),
        "bit_identical": not differences,
        "differences": differences[:20],
        "epochs": args.epochs,
        "straight_run_seconds": round(straight_seconds, 1),
        "starts": len(events) + 1,
    }
    (work / "kill_loop.json").write_text(json.dumps({"report": report, "events": events}, indent=2))
    print(json.dumps(report, indent=2))
    return 0 if report["bit_identical"] and not report["temporaries_left_at_the_end"] else 1


if __name__ == "__main__":
    sys.exit(main())
