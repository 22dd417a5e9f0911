"""Pack CT-IQAD small enough to travel with the working tree to a lent GPU machine.

    python scripts/pack_for_gpu.py ../shared/data/ct-iqad data/gpu-ct-iqad

The GPU tool carries at most 64 MiB with the repository (~41 MB), so the images go as
grey JPEG at quality 85 and their own 256×184 size (≈ 20 MiB for the 1876 slices; the
originals are ≈ 55 MiB of PNG), with the split files rewritten to the new names. `data/` is
git-ignored: the images are never committed. The paper preset resizes them to 256 px as it
would the PNGs; the JPEG rounding is the only difference, and the check says so.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    source, out = Path(sys.argv[1]), Path(sys.argv[2])
    if not (source / "train.csv").is_file():
        print(f"error: {source} holds no train.csv (is ../shared/data/ct-iqad there?)", file=sys.stderr)
        return 2
    (out / "Images").mkdir(parents=True, exist_ok=True)
    for split in ("train.csv", "val.csv"):
        header, *rows = (source / split).read_text().splitlines()
        lines = [header]
        for row in rows:
            name, labels = row.split(",", 1)
            target = Path(name).with_suffix(".jpg")
            Image.open(source / name).convert("L").save(out / target, "JPEG", quality=85)
            lines.append(f"{target.as_posix()},{labels}")
        (out / split).write_text("\n".join(lines) + "\n")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
    print(f"packed {source} into {out}: {size:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
