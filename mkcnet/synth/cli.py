"""`mkcnet synth`: generate the synthetic fundus data set."""

from __future__ import annotations

import argparse
from pathlib import Path

EPILOG_SYNTH = """example:
  mkcnet synth data/synth-fundus --n 2000 --size 256 --seed 0

Writes images/, train.csv, val.csv, test.csv (image,diagnosis,quality with diagnosis
0 NoDR / 1 NPDR / 2 PDR and quality 0 reject / 1 usable / 2 good), generation.jsonl
(every image's generation and degradation parameters) and meta.json.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("synth", help="generate the synthetic fundus data set (DR grade + quality)",
                              description="Generate procedural colour-fundus photographs with DR and quality labels.",
                              epilog=EPILOG_SYNTH, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="output data-set folder")
    p.add_argument("--n", type=int, default=2000, help="number of images (default 2000)")
    p.add_argument("--size", type=int, default=256, help="image side in px (default 256)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--diagnosis-ratios", default="0.4,0.35,0.25", help="NoDR,NPDR,PDR (default 0.4,0.35,0.25)")
    p.add_argument("--quality-ratios", default="0.25,0.25,0.5", help="reject,usable,good (default 0.25,0.25,0.5)")
    p.add_argument("--split", default="0.7,0.15,0.15", help="train,val,test fractions")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    p.set_defaults(func=run_synth)


def run_synth(args: argparse.Namespace) -> int:
    from mkcnet.degradation.dataset import parse_fractions
    from mkcnet.synth import make_synth_dataset

    summary = make_synth_dataset(
        args.out, n=args.n, size=args.size, seed=args.seed, workers=args.workers,
        diagnosis_ratios=parse_fractions(args.diagnosis_ratios, 3, "--diagnosis-ratios"),
        quality_ratios=parse_fractions(args.quality_ratios, 3, "--quality-ratios"),
        split=parse_fractions(args.split, 3, "--split"), overwrite=args.overwrite,
    )
    print(f"wrote {summary['n']} images ({summary['size']} px) to {args.out} in {summary['seconds']} s "
          f"with {summary['workers']} workers: {summary['splits']}")
    return 0
