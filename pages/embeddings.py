"""Embeddings: t-SNE / UMAP / PCA of each branch's features for a results pack, coloured by
diagnosis, quality, joint label or correctness; picking a point shows its image (where it can
be had) and what the model said about it.

Bundled packs carry their coordinates, so the page is instant; other packs are embedded on
demand (once). API endpoints: /embedding and /embedding_point.
"""

from __future__ import annotations

import gradio as gr
import numpy as np
import pandas as pd

from mkcnet.errors import UserError
from mkcnet.inference.predict import FEATURE_NAMES
from mkcnet.workbench.context import Workbench
from mkcnet.workbench.imaging import as_rgb
from mkcnet.workbench.ui import data_folder_field, guarded, model_dropdown, page_frame, status

TITLE = "Embeddings"
METHODS = [("t-SNE", "tsne"), ("UMAP", "umap"), ("PCA", "pca")]
COLOURS = [("diagnosis", "diagnosis"), ("quality", "quality"), ("joint label", "joint"), ("correct?", "correct")]
SCORE_COLUMNS = {"silhouette_diagnosis": "by diagnosis", "silhouette_quality": "by quality"}
BRANCH_LABELS = {"diagnosis": "diagnosis", "quality": "quality", "auxiliary": "auxiliary ω", "fused": "fused diagnosis"}


def available_branches(context: Workbench, key: str) -> list[str]:
    features = context.packs.entry(key).pack.features
    return [b for b in FEATURE_NAMES if b in features]


def nearest_row(table: pd.DataFrame, pick: str) -> int:
    """A row from the point box: "x,y" (a click on the plot) → the nearest point; "#n" or "n" → row n."""
    text = str(pick or "").strip().lstrip("#")
    if "," in text:
        try:
            x, y = (float(v) for v in text.split(",")[:2])
        except ValueError:
            raise UserError(f"cannot read the point {pick!r}; expected x,y or an image number") from None
        return int(np.argmin((table["x"] - x) ** 2 + (table["y"] - y) ** 2))
    if not text.isdigit():
        raise UserError(f"cannot read the point {pick!r}; expected x,y or an image number")
    return int(text)


def describe_row(context: Workbench, key: str, row: int) -> str:
    pack = context.packs.entry(key).pack
    t = pack.predictions.iloc[row]
    dnames, qnames = pack.class_names("diagnosis"), pack.class_names("quality")
    probs = pack.probabilities("diagnosis")[row]
    pred = int(t["pred_diagnosis"])
    lines = [f"**#{row}** `{t['image']}`",
             f"- truth: **{dnames[int(t['diagnosis'])]}**" + (
                 f" · quality {qnames[int(t['quality'])]}" if int(t["quality"]) >= 0 else ""),
             f"- predicted: **{dnames[pred]}** ({probs[pred]:.0%}) " + ("✓" if int(t["correct"]) else "✗ wrong")]
    qprobs = pack.probabilities("quality")
    if qprobs is not None and "pred_quality" in t:
        lines.append(f"- predicted quality: {qnames[int(t['pred_quality'])]} ({qprobs[row].max():.0%})")
    return "\n".join(lines)


def build(context: Workbench) -> gr.Blocks:
    choices = context.packs.choices()
    first = choices[0][1] if choices else None
    with page_frame(TITLE, TITLE, "Each branch's features in 2-D. MKCNet's branches should specialise: diagnosis "
                    "features group by diagnosis, quality features by quality. Click a point to see its image."
                    ) as (page, status_md):
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                pack = gr.Dropdown(choices, value=first, label="Run (results pack)", allow_custom_value=True)
                branch = gr.Radio([(label, b) for b, label in BRANCH_LABELS.items()], value="diagnosis",
                                  label="Branch", info="a branch the run lacks (vanilla: quality, ω) shows diagnosis")
                method = gr.Radio(METHODS, value="tsne", label="Embedding")
                colour = gr.Radio(COLOURS, value="diagnosis", label="Colour by")
                scores = gr.Dataframe(label="Separation: silhouette of each branch's features", interactive=False,
                                      wrap=True)
                with gr.Accordion("Add a run or evaluate on your data", open=False):
                    run_dir = gr.Textbox(label="Run directory or results-pack folder",
                                         placeholder="runs/ct-iqad/mkcnet (holds eval-val/ from mkcnet evaluate)")
                    add = gr.Button("Add run")
                    data, _ = data_folder_field(context, page)
                    model = model_dropdown(context, label="Model to evaluate on the data folder")
                    evaluate = gr.Button("Evaluate on my data (val.csv)")
            with gr.Column(scale=2, min_width=420):
                plot = gr.Plot(label="Embedding", elem_id="embedding-plot")
                pick = gr.Textbox(label="Selected point", elem_id="embedding-pick",
                                  placeholder="click a point on the plot, or type an image number (e.g. 12)")
                with gr.Row():
                    image = gr.Image(label="Image", height=256, interactive=False, buttons=[])
                    details = gr.Markdown(elem_classes=["point"])

        @guarded(4)
        def show(key: str, branch_name: str, how: str, by: str):
            from mkcnet.analysis.embedding import class_names, embedding_figure, separation_scores

            if not key:
                raise UserError("no results pack: add a run directory or evaluate a model on your data")
            available = available_branches(context, key)
            branch_name = branch_name if branch_name in available else available[0]
            table = context.packs.embedding(key, branch_name, how)
            pack = context.packs.entry(key).pack
            figure = embedding_figure(table, by, class_names(pack))
            figure.update_layout(height=480, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                                 title=f"{context.packs.entry(key).label} · {BRANCH_LABELS[branch_name]} features")
            return (figure, branch_name,
                    separation_scores(pack).round(3).rename(columns=SCORE_COLUMNS), status())

        @guarded(3)
        def select(key: str, branch_name: str, how: str, point: str, data_root: str):
            if not key or not str(point or "").strip():
                return None, "", status()
            table = context.packs.embedding(key, branch_name, how)
            row = nearest_row(table, point)
            text = describe_row(context, key, row)
            array = context.packs.image(key, row, context.data_root(data_root))
            if array is None:
                text += "\n\n*The image is not available here: set the data folder to the data set it came from.*"
            return (None if array is None else as_rgb(array)), text, status()

        @guarded(3)
        def add_run(directory: str):
            key = context.packs.add_run(directory)
            return gr.update(choices=context.packs.choices(), value=key), "", status()

        @guarded(3)
        def evaluate_on_data(model_name: str, data_root: str):
            root = context.data_root(data_root)
            if root is None:
                raise UserError("set a data folder first")
            key = context.packs.evaluate(model_name, root)
            return gr.update(choices=context.packs.choices(), value=key), "", status()

        view = [pack, branch, method, colour]
        gr.on([page.load, pack.change, branch.change, method.change, colour.change], show, view,
              [plot, branch, scores, status_md], api_name="embedding", trigger_mode="always_last")
        gr.on([pick.change, pick.submit], select, [pack, branch, method, pick, data], [image, details, status_md],
              api_name="embedding_point", trigger_mode="always_last")
        add.click(add_run, run_dir, [pack, pick, status_md], api_visibility="private")
        evaluate.click(evaluate_on_data, [model, data], [pack, pick, status_md], api_visibility="private")
    return page
