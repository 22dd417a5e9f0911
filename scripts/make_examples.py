"""Make the workbench's example images (assets/examples/) with the project's own code.

- synthetic fundus photographs at each quality level (mkcnet.synth), as PNG;
- scikit-image's retina photograph (CC0, Wikimedia) clean and degraded by fundus families, as
  JPEG — a real eye the synthetic-trained model has never seen;
- scikit-image's Shepp-Logan CT phantom, clean as a 16-bit DICOM and degraded by CT families
  (one as a 16-bit TIFF), so the CT models and the DICOM/TIFF readers have something to show.

No image from a real data set goes into the repository. Usage: python scripts/make_examples.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from mkcnet.degradation import degrade
from mkcnet.synth import DIAGNOSES, QUALITIES, synth_sample

OUT = Path(__file__).resolve().parents[1] / "assets" / "examples"
SIZE = 256  # the models read 128 px; 256 keeps the overlays crisp and the files small


def write_dicom(path: Path, pixels: np.ndarray) -> None:
    """A minimal CT DICOM (16-bit, rescale slope/intercept to Hounsfield-like units)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[path.name])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientName, ds.PatientID = "CT", "Phantom^SheppLogan", "PHANTOM"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.WindowCenter, ds.WindowWidth = 0, 2000
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


OPENING = "synth_NPDR_reject.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    index = []

    # Synthetic fundus: one per quality level and diagnosis, from fixed seeds.
    for i, (diagnosis, quality) in enumerate([(2, 2), (1, 2), (0, 2), (2, 1), (1, 0), (2, 0)]):
        image, record = synth_sample(seed=1000 + i, size=SIZE, diagnosis=diagnosis, quality=quality)
        name = f"synth_{DIAGNOSES[diagnosis]}_{QUALITIES[quality]}.png"
        Image.fromarray(image).save(out / name, optimize=True)
        family = record["degradation"]["family"] if record.get("degradation") else "none"
        index.append({"file": name, "modality": "fundus", "source": "mkcnet.synth",
                      "caption": f"synthetic · {DIAGNOSES[diagnosis]} · quality {QUALITIES[quality]}",
                      "diagnosis": diagnosis, "quality": quality, "degradation": family})

    # The first screen opens on the first example: one the bundled synthetic-fundus MKCNet reads
    # correctly on both heads (NPDR 53 %, quality reject 88 %): a low-quality image diagnosed, the
    # method's point. (The model before read synth_NoDR_good.png so; this one calls it usable.)
    index.insert(0, index.pop(next(i for i, e in enumerate(index) if e["file"] == OPENING)))

    # The scikit-image retina, clean and degraded (the simulator's fundus families).
    from skimage import data

    retina = np.asarray(Image.fromarray(data.retina()).resize((SIZE, SIZE), Image.LANCZOS))
    for family, severity in [(None, 0), ("fundus.blur", 3), ("fundus.light", 4), ("fundus.spots", 3)]:
        image, _ = (retina, None) if family is None else degrade(retina, family, severity, seed=7)
        name = "retina.jpg" if family is None else f"retina_{family.split('.')[1]}{severity}.jpg"
        Image.fromarray(image).save(out / name, quality=90)
        index.append({"file": name, "modality": "fundus", "source": "skimage.data.retina (CC0)",
                      "caption": "real retina · clean" if family is None else f"real retina · {family} {severity}",
                      "degradation": family or "none", "severity": severity})

    # The Shepp-Logan phantom as a CT slice: DICOM (clean), 16-bit TIFF and PNG (degraded).
    phantom = np.asarray(Image.fromarray((data.shepp_logan_phantom() * 255).astype(np.uint8)).resize(
        (SIZE, SIZE), Image.LANCZOS))
    write_dicom(out / "phantom_ct.dcm", phantom.astype(np.uint16) * 8)
    index.append({"file": "phantom_ct.dcm", "modality": "ct", "source": "skimage.data.shepp_logan_phantom",
                  "caption": "CT phantom · clean (16-bit DICOM)", "degradation": "none"})
    for family, severity, suffix in [("ct.streak", 4, "tif"), ("ct.gaussian_noise", 3, "png")]:
        image, _ = degrade(phantom, family, severity, seed=7)
        name = f"phantom_{family.split('.')[1]}{severity}.{suffix}"
        if suffix == "tif":  # 16-bit grey, as scanners export it
            Image.fromarray(image.astype(np.uint16) * 257).save(out / name)
        else:
            Image.fromarray(image).save(out / name, optimize=True)
        index.append({"file": name, "modality": "ct", "source": "skimage.data.shepp_logan_phantom",
                      "caption": f"CT phantom · {family} {severity}" + (" (16-bit TIFF)" if suffix == "tif" else ""),
                      "degradation": family, "severity": severity})

    (out / "examples.json").write_text(json.dumps(index, indent=1) + "\n")
    total = sum(p.stat().st_size for p in out.iterdir())
    print(f"wrote {len(index)} examples to {out} ({total / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
