"""Degradation speed: images per second for every family at 256 px, one process.

    python benchmarks/degradation_speed.py [--side 256] [--repeats 20]

Fundus families run on a synthetic RGB fundus, the others on a grey phantom; each call is
the full public `degrade()` (conversion, sampling, filtering) on a uint8 array, severity 1..5.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from skimage import data, transform

from mkcnet.degradation import degrade, list_families
from mkcnet.synth import generate_fundus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    fundus = np.rint(generate_fundus(0, args.side, 1)[0] * 255).astype(np.uint8)
    grey = np.rint(transform.resize(data.shepp_logan_phantom(), (args.side, args.side)) * 255).astype(np.uint8)
    rates = {}
    for fam in list_families():
        src = fundus if fam.startswith("fundus.") else grey
        degrade(src, fam, 3, seed=0)  # warm-up (lazy imports, caches)
        start = time.perf_counter()
        for i in range(args.repeats):
            degrade(src, fam, 1 + i % 5, seed=i)
        rates[fam] = args.repeats / (time.perf_counter() - start)
        print(f"{fam:26s} {rates[fam]:8.1f} images/s")
    slowest = min(rates, key=rates.get)
    print(f"\n{args.side} px, one process: slowest {slowest} at {rates[slowest]:.1f} images/s, "
          f"median {np.median(list(rates.values())):.1f} images/s")


if __name__ == "__main__":
    main()
