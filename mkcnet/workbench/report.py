"""Batch readings and the one-case report of the Diagnose page.

A batch is several uploaded images (or one zip of them, unpacked under the hosting limits into
the visitor's session folder): one row per file — diagnosis, confidence, quality, the
out-of-distribution verdict, or the error that kept it from being read. Files are named by
their own names, never by a server path.

A case report is one self-contained HTML file: the image the model saw, the probabilities,
the reading, every branch map, and the model's name, card and the package version.
"""

from __future__ import annotations

import base64
import html
import io
import zipfile
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

import mkcnet
from mkcnet.errors import UserError
from mkcnet.inference.evaluate import collect_inputs, predict_images
from mkcnet.workbench.hosting import Hosting, extract_zip
from mkcnet.workbench.reading import COLOUR_BAR, Reading
from mkcnet.workbench.zoo import ZooModel

BATCH_COLUMNS = ["file", "diagnosis", "confidence", "diagnosis set", "quality", "quality confidence", "ood",
                 "ood_score", "ood_reason", "error"]


def batch_files(uploads: list[str | Path], folder: Path, limits: Hosting) -> list[Path]:
    """The images of an upload: loose files as they are, one zip unpacked into `folder`."""
    uploads = [Path(u) for u in uploads or []]
    if not uploads:
        raise UserError("upload some images (or one zip of images) first")
    if len(uploads) > limits.max_files:
        raise UserError(f"{len(uploads)} files uploaded; at most {limits.max_files} are accepted")
    if len(uploads) == 1 and zipfile.is_zipfile(uploads[0]):
        folder.mkdir(parents=True, exist_ok=True)
        extract_zip(uploads[0], folder, limits)
        found = collect_inputs([folder]).files
        return found
    return uploads


def batch_table(model: ZooModel, files: list[Path], root: Path | None = None) -> pd.DataFrame:
    """One row per file, errors included, with the columns of BATCH_COLUMNS."""
    table = predict_images(model.loaded, files, device="cpu")
    names = [str(Path(f).relative_to(root)) if root is not None and Path(f).is_relative_to(root) else Path(f).name
             for f in files]
    # An error names the file as the visitor knows it, never where the server keeps it.
    errors = [str(error).replace(str(f), name) for error, f, name in zip(table["error"], files, names, strict=True)]
    out = pd.DataFrame({"file": names, "error": errors})
    for head, label in (("diagnosis", "confidence"), ("quality", "quality confidence")):
        probs = [c for c in table.columns if c.startswith(f"p_{head}_")]
        out[head] = table[head] if head in table else ""
        out[label] = table[probs].max(axis=1).round(3) if probs else np.nan
    # The classes still possible at the checkpoint's coverage ("" for a checkpoint without sets).
    out["diagnosis set"] = table["diagnosis_set"].str.replace("|", " or ", regex=False) \
        if "diagnosis_set" in table else ""
    for column in ("ood", "ood_score", "ood_reason"):
        out[column] = table[column] if column in table else ""
    return out[BATCH_COLUMNS].astype(object).fillna("")


FLAGGED = "unlike the training data: not a diagnosis"
STRUCK = ("diagnosis", "confidence", "diagnosis set")


def batch_view(table: pd.DataFrame):
    """`batch_table` as the page shows it: flagged rows first, marked, their diagnosis struck out;
    confidences as whole percentages (the CSV keeps the numbers).

        >>> batch_view(pd.DataFrame({c: [""] for c in BATCH_COLUMNS})).data.columns[0]
        'verdict'
    """
    flagged = table["ood"].astype(str) == "True"
    verdict = np.where(flagged, "⚠ " + FLAGGED, np.where(table["error"].astype(str) != "", "not read", ""))
    shown = table.assign(verdict=verdict)[["verdict", *BATCH_COLUMNS]]
    shown = shown.iloc[np.argsort(~flagged.to_numpy(), kind="stable")].reset_index(drop=True)

    def strike(row: pd.Series) -> list[str]:
        struck = row["verdict"].startswith("⚠")
        return ["text-decoration: line-through; color: #888" if struck and c in STRUCK else "" for c in row.index]

    def percent(value) -> str:
        return f"{float(value):.0%}" if value not in ("", None) else ""

    return shown.style.apply(strike, axis=1).format({"confidence": percent, "quality confidence": percent,
                                                     "ood_score": lambda v: f"{v:.2f}" if v != "" else ""})


def _png(array: np.ndarray) -> str:
    data = io.BytesIO()
    Image.fromarray(array).save(data, format="PNG")
    return "data:image/png;base64," + base64.b64encode(data.getvalue()).decode()


def _bars(probs: dict[str, float] | None, attributes: str = "") -> str:
    if not probs:
        return "<p>none (this model has no such head)</p>"
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.1%}</td></tr>" for k, v in
                   sorted(probs.items(), key=lambda kv: -kv[1]))
    return f"<table{attributes}>{rows}</table>"


def _margin_table(reading: Reading) -> str:
    """The robustness margin per degradation family, or why there is none."""
    if reading.margin is None:
        return "<p>Not computed for this report.</p>"
    from mkcnet.inference.robustness import family_label

    rows = "".join(f"<tr><td>{html.escape(family_label(f))}</td><td>{'holds through 5' if s is None else f'flips at {s}'}"
                   f"</td></tr>" for f, s in sorted(reading.margin.flips.items(), key=lambda kv: (kv[1] or 6, kv[0])))
    return (f"<p>The lowest severity (1-5) of each degradation family of this modality at which the diagnosis "
            f"changes (the image degraded by the simulator, seed {reading.margin.seed}).</p><table>{rows}</table>")


def _set_line(reading: Reading) -> str:
    if reading.verdict is not None and reading.verdict.ood:
        return "<p>No diagnosis set: the image is out of distribution.</p>"
    if reading.diagnosis_set is None:
        return "<p>No prediction set: the model was calibrated before sets existed.</p>"
    names = " or ".join(html.escape(n) for n in reading.diagnosis_set)
    verdict = "one answer" if len(reading.diagnosis_set) == 1 else "more than one answer: refer"
    return (f"<p>Diagnosis set at {reading.set_coverage:.0%} confidence (per predicted image quality): "
            f"<b>{names}</b> ({verdict}).</p>")


def case_report(model: ZooModel, image_name: str, display: np.ndarray, reading: Reading,
                overlays: list[tuple[np.ndarray, str]], input_note: str = "", method: str = "",
                opacity: float | None = None) -> str:
    """The report as one HTML document (images inlined) that prints to clean A4 pages: the date,
    the model and its version, the out-of-distribution verdict first, the probabilities (struck
    out when the image is flagged), the reading, the maps with their method, opacity and colour
    scale, and the rendered model card. `input_note` says how the image was read (e.g.
    `Volume.describe(k)`: "slice 2 of 3 (0-based), lung window (C -600, W 1500)")."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark").enable("table")  # the card's tables
    kind = "calibrated" if reading.calibrated else "raw softmax (not calibrated)"
    flagged = reading.verdict is not None and reading.verdict.ood
    # A flagged image's maps would explain an output that means nothing (as on the page): none.
    maps = "".join(f'<figure><img src="{_png(img)}" width="220"><figcaption>{html.escape(caption)}</figcaption></figure>'
                   for img, caption in ([] if flagged else overlays))
    how = ", ".join(part for part in (html.escape(method), f"opacity {opacity:.0%}" if opacity is not None else "") if part)
    entry = model.entry
    note = f"<p>{html.escape(input_note)}</p>" if input_note else ""
    stamp = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z").strip()
    verdict = (f'<p class="verdict flagged"><b>Out of distribution: do not use the diagnosis.</b> '
               f"{html.escape(reading.verdict.reason or '')}</p>" if flagged else
               '<p class="verdict">In distribution: the image resembles the model\'s validation images.</p>'
               if reading.verdict is not None else "")
    struck = ' class="struck"' if flagged else ""
    no_maps = "<p>None: the image is out of distribution.</p>" if flagged else "<p>None.</p>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>MKCNet case report: {html.escape(image_name)}</title>
<style>
body{{font-family:sans-serif;max-width:960px;margin:2em auto;line-height:1.35}}
figure{{display:inline-block;margin:4px;break-inside:avoid}} figcaption{{font-size:.85em;max-width:220px}}
table td,table th{{padding:2px 12px;text-align:left}} code,pre{{white-space:pre-wrap;overflow-wrap:anywhere}}
.limits{{border:1px solid #c00;padding:8px}} .verdict{{padding:8px;border:2px solid #2a7}}
.verdict.flagged{{border-color:#c00;background:#fee}} .struck td{{text-decoration:line-through;color:#888}}
h2{{break-after:avoid}} @page{{size:A4;margin:14mm}} @media print{{body{{margin:0;max-width:none}}}}
</style></head><body>
<h1>Case report: {html.escape(image_name)}</h1>
<p>{html.escape(stamp)} · model <b>{html.escape(entry.title)}</b> (<code>{html.escape(entry.name)}</code>) ·
mkcnet {mkcnet.__version__}</p>
{verdict}
<p class="limits"><b>Research software, not a medical device.</b> Never base a clinical decision on this report.
The model has seen only <code>{html.escape(entry.dataset)}</code> images.</p>
<h2>Image as the model saw it</h2><img src="{_png(display)}" width="256">{note}
<h2>Probabilities ({kind}){" — not a diagnosis: the image is out of distribution" if flagged else ""}</h2>
<h3>Diagnosis</h3>{_bars(reading.diagnosis, struck)}{_set_line(reading)}
<h3>Image quality</h3>{_bars(reading.quality, struck)}
<h2>Reading</h2>{md.render(reading.text)}
<h2>Robustness margin</h2>{_margin_table(reading)}
<h2>Class activation maps{f" ({how})" if how else ""}</h2>{maps or no_maps}
{COLOUR_BAR if maps else ""}
<h2>Model card</h2>{md.render(entry.card_markdown())}
</body></html>
"""
