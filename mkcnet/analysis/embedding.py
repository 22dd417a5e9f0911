"""Feature analysis: 2-D embeddings of each branch's features and how well they separate classes.

The paper's t-SNE figure argues that MKCNet's branches specialise: diagnosis features cluster
by diagnosis, quality features by quality. `separation_scores` puts a number on that story:
the silhouette of each branch's features (in their own space, not the 2-D picture, so the
score does not depend on the embedding's randomness) grouped by diagnosis and by quality.
"""

from __future__ import annotations

import threading
import time
import warnings

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.metrics import silhouette_score

from mkcnet.branches import FEATURE_NAMES
from mkcnet.errors import UserError
from mkcnet.inference.results import ResultsPack

EMBEDDINGS = ("tsne", "umap", "pca")
COLOURS = ("diagnosis", "quality", "joint", "correct", "pred_diagnosis")
NAMES = {"tsne": "t-SNE", "umap": "UMAP", "pca": "PCA"}

_umap_lock = threading.Lock()
_umap_state = {"cached": False, "warm": False}


def umap_module():
    """umap-learn, with its numba functions cached on disk (as `cache=True` would, which umap-learn
    leaves off): the JIT compilation a first UMAP costs (13-30 s on 2 cores) is paid once per
    machine, not once per process; later processes load the machine code in ~0.1 s. The cache
    lies where numba puts it: NUMBA_CACHE_DIR if set, else __pycache__ beside umap's sources, else
    the user's cache folder. A function numba cannot cache is compiled as before."""
    import umap  # ~2 s to import on 2 cores: only when asked for
    from numba.core.caching import NullCache
    from numba.core.registry import CPUDispatcher

    with _umap_lock:
        if not _umap_state["cached"]:
            import sys

            for name, module in list(sys.modules.items()):
                if name == "umap" or name.startswith("umap."):
                    for function in vars(module).values():
                        if isinstance(function, CPUDispatcher) and isinstance(function._cache, NullCache):
                            try:
                                function.enable_caching()
                            except RuntimeError:  # no writable place for this one's cache
                                pass
            _umap_state["cached"] = True
    return umap


def umap_ready() -> bool:
    """Whether `warm_umap` has run in this process (a UMAP is then a fraction of a second)."""
    return _umap_state["warm"]


def warm_umap() -> float:
    """One small UMAP, so that the imports and the numba compilation (or its loading from the disk
    cache, `umap_module`) are done before anyone waits for a UMAP: the workbench runs this in a
    background thread once it is up. Returns the seconds it took."""
    start = time.perf_counter()
    embed(np.random.default_rng(0).normal(size=(20, 8)).astype(np.float32), "umap")
    _umap_state["warm"] = True
    return time.perf_counter() - start


def start_umap_warm_up(delay: float = 0.0) -> threading.Thread:
    """`warm_umap` in a daemon thread, after `delay` seconds (a failure is logged, never raised:
    UMAP then warms on first use)."""
    import logging

    def run() -> None:
        time.sleep(delay)
        try:
            logging.getLogger("mkcnet.workbench").info("UMAP warmed up in %.1f s", warm_umap())
        except Exception:  # logged: the page computes UMAP on first use instead
            logging.getLogger("mkcnet.workbench").exception("UMAP warm-up failed")

    thread = threading.Thread(target=run, name="umap-warm-up", daemon=True)
    thread.start()
    return thread


def embed(features: np.ndarray, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """N×2 coordinates by t-SNE (scikit-learn), UMAP (umap-learn) or PCA; the same for the same seed."""
    features = np.asarray(features, dtype=np.float32)
    n = len(features)
    if n < 4:
        raise UserError(f"an embedding needs at least 4 images, got {n}")
    if method == "tsne":
        # Perplexity must stay below the sample count; 30 is scikit-learn's default.
        model = TSNE(2, perplexity=min(30.0, (n - 1) / 3), init="pca", random_state=seed)
    elif method == "umap":
        umap = umap_module()  # numba-compiled: once per machine (disk cache), not once per process
        model = umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), random_state=seed,
                          init="spectral" if n > 16 else "random")
    elif method == "pca":
        model = PCA(2, random_state=seed)
    else:
        raise UserError(f"unknown embedding {method!r}; choose from {', '.join(EMBEDDINGS)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # umap: "n_jobs overridden by random_state"
        return model.fit_transform(features).astype(np.float32)


def _features(pack: ResultsPack, branch: str) -> np.ndarray:
    if branch not in pack.features:
        have = ", ".join(pack.features) or "none"
        raise UserError(f"the results pack has no {branch!r} features (it has: {have})")
    return pack.features[branch]


def embedding_table(pack: ResultsPack, branch: str, method: str = "tsne", seed: int = 0) -> pd.DataFrame:
    """One row per image: x, y, image, diagnosis, quality, joint, correct, pred_diagnosis.

    `joint` is the JEM class q·num_diagnosis + d (-1 where the quality is unknown)."""
    xy = embed(_features(pack, branch), method, seed)
    t = pack.predictions
    d, q = t["diagnosis"].to_numpy(), t["quality"].to_numpy()
    return pd.DataFrame({
        "x": xy[:, 0], "y": xy[:, 1], "image": t["image"], "diagnosis": d, "quality": q,
        "joint": np.where(q >= 0, q * pack.num_classes("diagnosis") + d, -1),
        "correct": t["correct"], "pred_diagnosis": t["pred_diagnosis"],
    })


def _silhouette(features: np.ndarray, labels: np.ndarray) -> float:
    known = labels >= 0
    classes = len(np.unique(labels[known]))
    if not 2 <= classes < known.sum():
        return float("nan")  # undefined for one class, or one image per class
    return float(silhouette_score(features[known], labels[known]))


def separation_scores(pack: ResultsPack) -> pd.DataFrame:
    """Per branch in the pack: silhouette_diagnosis, silhouette_quality (−1..1, higher = the
    branch's features group more tightly by that label)."""
    t = pack.predictions
    rows = [{"branch": branch,
             "silhouette_diagnosis": _silhouette(pack.features[branch], t["diagnosis"].to_numpy()),
             "silhouette_quality": _silhouette(pack.features[branch], t["quality"].to_numpy())}
            for branch in FEATURE_NAMES if branch in pack.features]
    return pd.DataFrame(rows, columns=["branch", "silhouette_diagnosis", "silhouette_quality"])


def class_names(pack: ResultsPack) -> dict[str, tuple[str, ...]]:
    """The `names` argument of `embedding_figure` for a pack: its diagnosis and quality names."""
    return {"diagnosis": pack.class_names("diagnosis"), "quality": pack.class_names("quality")}


def label_text(table: pd.DataFrame, color: str, names: dict | None = None) -> pd.Series:
    """Readable labels for a colour column: class names, "COVID-19 · LQ" for joint, right/wrong."""
    names = names or {}
    diagnosis, quality = list(names.get("diagnosis", ())), list(names.get("quality", ()))

    def name(values: list[str], k: int) -> str:
        return values[k] if 0 <= k < len(values) else ("unknown" if k < 0 else str(k))

    if color in ("diagnosis", "pred_diagnosis"):
        return table[color].map(lambda k: name(diagnosis, k))
    if color == "quality":
        return table[color].map(lambda k: name(quality, k))
    if color == "joint":
        return pd.Series([f"{name(diagnosis, d)} · {name(quality, q)}" if q >= 0 else "unknown"
                          for d, q in zip(table["diagnosis"], table["quality"])], index=table.index)
    if color == "correct":
        return table[color].map({1: "right", 0: "wrong"})
    raise UserError(f"cannot colour by {color!r}; choose from {', '.join(COLOURS)}")


def embedding_figure(table: pd.DataFrame, color: str = "diagnosis", names: dict | None = None) -> go.Figure:
    """A scatter plot of an `embedding_table`, one colour per class of `color`.

    `names` maps "diagnosis" / "quality" to class names in label order (see `class_names`)."""
    order = table.sort_values(color, kind="stable")  # legend in label order (joint: the JEM order)
    shown = order.assign(label=label_text(order, color, names))
    # Right and wrong in the colours everyone reads them by (the default cycle made wrong blue, right red).
    colours = {"right": "#2a9d4b", "wrong": "#d62728"} if color == "correct" else None
    fig = px.scatter(shown, x="x", y="y", color="label", hover_data=["image", "diagnosis", "quality", "pred_diagnosis"],
                     category_orders={"label": list(dict.fromkeys(shown["label"]))}, template="plotly_white",
                     labels={"label": color}, color_discrete_map=colours)
    fig.update_traces(marker={"size": 6, "opacity": 0.8})
    fig.update_layout(xaxis={"showticklabels": False, "title": None}, yaxis={"showticklabels": False, "title": None})
    return fig
