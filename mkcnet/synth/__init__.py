"""Procedural colour-fundus photographs with DR grades and quality labels (no data needed).

    from mkcnet.synth import generate_fundus, synth_sample, make_synth_dataset
    img01, record = generate_fundus(seed=3, size=256, diagnosis=1)      # clean image
    img_u8, record = synth_sample(seed=3, size=256, diagnosis=1, quality=1)  # degraded
    make_synth_dataset("data/synth-fundus", n=2000, size=256, seed=0)
"""

from mkcnet.synth.dataset import make_synth_dataset, synth_sample
from mkcnet.synth.fundus import DIAGNOSES, generate_fundus
from mkcnet.synth.quality import QUALITIES

__all__ = ["DIAGNOSES", "QUALITIES", "generate_fundus", "make_synth_dataset", "synth_sample"]
