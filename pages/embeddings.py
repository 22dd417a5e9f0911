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

from mkcnet.branches import BRANCHES, FEATURE_NAMES
from mkcnet.errors import UserError
from mkcnet.workbench.context import Workbench
from mkcnet.workbench.imaging import as_rgb
from mkcnet.workbench.packs import PackStore
from mkcnet.workbench.ui import (
    PROGRESS,
    PageColumns,
    add_typed_run,
    data_source,
    model_dropdown,
    page_frame,
    progress_report,
    server_checked,
    wire,
)

TITLE = "Embeddings"
METHODS = [("t-SNE", "tsne"), ("UMAP", "umap"), ("PCA", "pca")]
COLOURS = [("diagnosis", "diagnosis"), ("quality", "quality"), ("joint label", "joint"), ("correct?", "correct")]
SCORE_COLUMNS = {"silhouette_diagnosis": "by diagnosis", "silhouette_quality": "by quality"}


def available_branches(packs: PackStore, key: str) -> list[str]:
    features = packs.entry(key).pack.features
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
    if int(text) >= len(table):
        raise UserError(f"no image #{text}: this pack holds images #0 to #{len(table) - 1}")
    return int(text)


def describe_row(packs: PackStore, key: str, row: int) -> str:
    pack = packs.entry(key).pack
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


class EmbeddingEvents:
    """The page's handlers, over the workbench context; `build` wires them."""

    def __init__(self, context: Workbench):
        self.context = context

    def show(self, key: str, branch_name: str, how: str, by: str, request: gr.Request, progress=PROGRESS):
        from mkcnet.analysis.embedding import class_names, embedding_figure, separation_scores

        if not key:
            raise UserError("no results pack: evaluate a model on your data, or add a run")
        packs = self.context.session(request).packs
        available = available_branches(packs, key)
        branch_name = branch_name if branch_name in available else available[0]
        table = packs.embedding(key, branch_name, how, progress_report(progress))
        pack = packs.entry(key).pack
        figure = embedding_figure(table, by, class_names(pack))
        figure.update_layout(height=480, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                             title=f"{packs.entry(key).label} · {BRANCHES[branch_name].label} features")
        return figure, branch_name, separation_scores(pack).round(3).rename(columns=SCORE_COLUMNS)

    def select(self, key: str, branch_name: str, how: str, point: str, request: gr.Request):
        if not key or not str(point or "").strip():
            return None, ""
        session = self.context.session(request)
        table = session.packs.embedding(key, branch_name, how)
        row = nearest_row(table, point)
        text = describe_row(session.packs, key, row)
        array = session.packs.image(key, row, self.context.data_root(session))
        if array is None:
            text += "\n\n*The image is not available here: bring the data set it came from.*"
        return (None if array is None else session.image_file(as_rgb(array))), text

    def evaluate_on_data(self, model_name: str, request: gr.Request, progress=PROGRESS):
        session = self.context.session(request)
        root = self.context.data_root(session)
        if root is None:
            raise UserError("bring a data set first: upload one" + ("" if self.context.hosting.hosted else
                                                                    " or name a data folder"))
        session.check_budget()
        key = session.packs.evaluate(model_name, root, report=progress_report(progress))
        return gr.update(choices=session.packs.choices(), value=key), ""

    def fitting_model(self, request: gr.Request):
        """The first model whose input checks the visitor's images pass (a CT set → a CT model)."""
        from mkcnet.inference.evaluate import check_fit

        session = self.context.session(request)
        root = self.context.data_root(session)
        files = [e.path for e in self.context.examples(None, root)] if root is not None else []
        for name in self.context.zoo.names() if files else []:
            try:
                check_fit(self.context.zoo.model(name).loaded, files)
            except UserError:
                continue
            return gr.update(value=name)
        return gr.update()

    def visitor_packs(self, key: str, request: gr.Request):
        """The pack list with the visitor's own (evaluated on another page too), the choice kept."""
        choices = self.context.session(request).packs.choices()
        keys = [k for _, k in choices]
        return gr.update(choices=choices, value=key if key in keys else (keys[0] if keys else None))

    def add_run(self, directory: str, request: gr.Request):
        session, key = add_typed_run(self.context, directory, request)
        return gr.update(choices=session.packs.choices(), value=key), ""


def build(context: Workbench, root: gr.Blocks | None = None) -> gr.Blocks:
    choices = context.packs.choices()
    first = choices[0][1] if choices else None
    with page_frame(TITLE, TITLE, "Each branch's features in 2-D. MKCNet's branches should specialise: diagnosis "
                    "features group by diagnosis, quality features by quality. Click a point to see its image."
                    , context, root=root) as (page, status_md, linked):
        with gr.Row(equal_height=False, elem_classes=[PageColumns.ROW]):
            with gr.Column(scale=1, min_width=300, elem_classes=[PageColumns.CONTROLS]):
                with gr.Column(elem_classes=[PageColumns.CHOOSE]):
                    # Custom values: a pack this visitor added; looked up in their session, never as a path.
                    pack = server_checked(choices, value=first, label="Run (results pack)")
                    branch = gr.Radio([(b.label, b.key) for b in BRANCHES.values()], value="diagnosis",
                                      label="Branch", info="a branch the run lacks (vanilla: quality, ω) shows diagnosis")
                    method = gr.Radio(METHODS, value="tsne", label="Embedding")
                    colour = gr.Radio(COLOURS, value="diagnosis", label="Colour by")
                with gr.Column(elem_classes=[PageColumns.TUNE]):
                    scores = gr.Dataframe(label="Separation: silhouette of each branch's features", interactive=False,
                                          wrap=True)
                    with gr.Accordion("Evaluate a model on your data" + ("" if context.hosting.hosted else
                                                                         ", or add a run"), open=False):
                        data_changed = data_source(context, status_md, linked)
                        model = model_dropdown(context, label="Model to evaluate on your data set")
                        evaluate = gr.Button("Evaluate on my data (val.csv)")
                        if not context.hosting.hosted:
                            run_dir = gr.Textbox(label="Run directory or results-pack folder on this machine",
                                                 placeholder="runs/ct-iqad/mkcnet (holds eval-val/ from mkcnet evaluate)")
                            add = gr.Button("Add run")
            with gr.Column(scale=2, min_width=420, elem_classes=[PageColumns.RESULTS]):
                plot = gr.Plot(label="Embedding", elem_id="embedding-plot")
                pick = gr.Textbox(label="Selected point", elem_id="embedding-pick",
                                  placeholder="click a point on the plot, or type an image number (e.g. 12)")
                with gr.Row():
                    image = gr.Image(label="Image", height=256, interactive=False, buttons=[])
                    details = gr.Markdown(label="Details", elem_classes=["point"])

        events = EmbeddingEvents(context)
        view = [pack, branch, method, colour]
        wire([page.load, pack.change, branch.change, method.change, colour.change], events.show, view,
             [plot, branch, scores, status_md], api_name="embedding", trigger_mode="always_last")
        # change alone: it follows typing and the plot's click; submit as well ran it twice (two toasts).
        wire(pick.change, events.select, [pack, branch, method, pick], [image, details, status_md],
             api_name="embedding_point", trigger_mode="always_last")
        wire(evaluate.click, events.evaluate_on_data, model, [pack, pick, status_md], api_visibility="private",
             concurrency_limit=1)
        wire(linked.then, events.visitor_packs, pack, pack, api_visibility="private")
        for changed in data_changed:  # the visitor's data set: the model to evaluate becomes one that fits it
            wire(changed.then, events.fitting_model, None, model, api_visibility="private")
        if not context.hosting.hosted:
            wire(add.click, events.add_run, run_dir, [pack, pick, status_md], api_visibility="private")
    return page
