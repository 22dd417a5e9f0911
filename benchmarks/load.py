"""Load: concurrent gradio_client users on /predict and /cam against the launched app.

    python benchmarks/load.py [--users 8] [--seconds 60] [--hosted]

Starts `python app.py` on a free 127.0.0.1 port (nothing leaves the machine), lets each user
upload the bundled example and alternate /predict and /cam until the time is up, then reports
requests, errors, p50/p95 latency per endpoint, the server's resident memory before and after,
and the files left in its temporary folders once the users are gone.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from startup import ENV, REPO, free_port, wait_http  # benchmarks/startup.py, beside this file

EXAMPLE = REPO / "assets" / "examples" / "synth_PDR_reject.png"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def new_files(root: Path, since: float) -> dict[str, int]:
    """Files made since `since` in the app's temporary folders: Gradio's cache, and the
    workbench's visitor sessions."""
    gradio_dir = Path(os.environ.get("GRADIO_TEMP_DIR", root / "gradio"))
    folders = {"Gradio's cache": [gradio_dir], "visitor sessions": list(root.glob("mkcnet-sessions-*"))}
    return {name: sum(1 for f in dirs if f.exists() for p in f.rglob("*") if p.is_file() and p.stat().st_mtime >= since)
            for name, dirs in folders.items()}


def user(url: str, model: str, until: float, log: list, errors: list) -> None:
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    file = handle_file(str(EXAMPLE))
    turn = 0
    while time.perf_counter() < until:
        endpoint = "/predict" if turn % 2 == 0 else "/cam"
        args = (file, model, "none", 0, 0) if endpoint == "/predict" else (file, model, "none", 0, 0, "Grad-CAM", 0.5)
        start = time.perf_counter()
        try:
            out = client.predict(*args, api_name=endpoint)
            if out[-1]:  # the status line: a message means the request failed
                errors.append(f"{endpoint}: {out[-1]}")
            else:
                log.append((endpoint, time.perf_counter() - start))
        except Exception as err:  # noqa: BLE001 - counted and reported, the run goes on
            errors.append(f"{endpoint}: {type(err).__name__}: {err}")
        turn += 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=8)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--hosted", action="store_true", help="start the app in hosted mode")
    p.add_argument("--threads", type=int, help="OMP_NUM_THREADS for the server (torch's threads per request)")
    args = p.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    tmp = Path(tempfile.gettempdir())
    started = time.time()
    command = [sys.executable, "app.py", "--port", str(port)] + (["--hosted"] if args.hosted else [])
    log_file = open(tempfile.gettempdir() + "/mkcnet-load-server.log", "w")
    env = {**ENV, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})}
    app = subprocess.Popen(command, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        wait_http(url, time.perf_counter() + 180)
        model = "synth-fundus-mkcnet"
        rss_start = rss_mb(app.pid)
        log: list[tuple[str, float]] = []
        errors: list[str] = []
        until = time.perf_counter() + args.seconds
        threads = [threading.Thread(target=user, args=(url, model, until, log, errors)) for _ in range(args.users)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rss_end = rss_mb(app.pid)
        print(f"# Load: {args.users} users × {args.seconds:.0f} s on /predict and /cam "
              f"({os.cpu_count()} CPU cores, {'hosted' if args.hosted else 'local'} mode, 127.0.0.1)\n")
        print("| endpoint | requests | p50 ms | p95 ms |")
        print("|---|---:|---:|---:|")
        for endpoint in ("/predict", "/cam"):
            times = sorted(t for e, t in log if e == endpoint)
            if times:
                p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
                print(f"| `{endpoint}` | {len(times)} | {statistics.median(times) * 1000:.0f} | {p95 * 1000:.0f} |")
        print(f"\n- requests: {len(log)} answered, {len(errors)} errors" + (f" (first: {errors[0]})" if errors else ""))
        print(f"- server memory (RSS): {rss_start:.0f} MB before, {rss_end:.0f} MB after")
    finally:
        app.terminate()
        app.wait(timeout=30)
    time.sleep(1)
    left = new_files(tmp, started)
    print("- files the run left in the temporary folders after the app stopped: "
          + ", ".join(f"{n} in {name}" for name, n in left.items())
          + " (Gradio keeps the pages' own initial images; visitors' uploads and outputs are deleted)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
