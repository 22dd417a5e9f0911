"""The analysis API the workbench imports: LQ-ratio curves and feature embeddings, on hand-made packs."""

import numpy as np
import pandas as pd
import pytest

from mkcnet.analysis.embedding import (
    class_names,
    embed,
    embedding_figure,
    embedding_table,
    label_text,
    separation_scores,
)
from mkcnet.analysis.figures import save_figure
from mkcnet.analysis.ood import lq_ratio_curves, lq_ratio_draws, ood_figure
from mkcnet.data.shift import draw_mix, largest_size, lq_subset
from mkcnet.inference.results import ResultsPack
from mkcnet.metrics import classification_metrics, quality_groups

N_HQ, N_LQ = 10, 6


def hand_made_pack(seed: int = 0) -> ResultsPack:
    """HQ images are diagnosed right with confident, well-ranked probabilities; LQ ones wrong."""
    quality = np.array([1] * N_HQ + [0] * N_LQ)
    diagnosis = np.arange(N_HQ + N_LQ) % 2
    right = np.where(diagnosis == 1, 0.9, 0.1)
    p1 = np.where(quality == 1, right, 1 - right)
    table = pd.DataFrame({"image": [f"img{i}.png" for i in range(len(quality))], "diagnosis": diagnosis,
                          "quality": quality, "pred_diagnosis": (p1 > 0.5).astype(int),
                          "prob_diagnosis_0": 1 - p1, "prob_diagnosis_1": p1})
    table["correct"] = (table["pred_diagnosis"] == table["diagnosis"]).astype(int)
    rng = np.random.default_rng(seed)
    # Diagnosis features cluster by diagnosis, quality features by quality.
    features = {"diagnosis": rng.normal(0, 0.1, (len(table), 8)) + diagnosis[:, None] * 3,
                "quality": rng.normal(0, 0.1, (len(table), 8)) + quality[:, None] * 3}
    header = {"model": {"num_diagnosis": 2, "num_quality": 2, "diagnosis_names": ["non-COVID", "COVID-19"],
                        "quality_names": ["LQ", "HQ"]}}
    return ResultsPack(table, {k: v.astype(np.float32) for k, v in features.items()}, header)


def test_draws_hold_exactly_the_requested_lq_share():
    quality = np.array([1] * N_HQ + [0] * N_LQ)
    lq, hq = quality_groups(quality, 2)
    rng = np.random.default_rng(0)
    for ratio in np.linspace(0, 1, 11):
        index = draw_mix(lq, hq, ratio, 6, rng)
        assert len(index) == 6 and (quality[index] == 0).sum() == round(ratio * 6)
        assert len(set(index)) == 6  # no image twice when the groups are large enough


def test_lq_ratio_curves_are_exact_on_a_hand_made_table():
    curves = lq_ratio_curves(hand_made_pack(), ratios=[0, 0.5, 1], repeats=50)
    assert list(curves.columns) == ["ratio", "metric", "mean", "low", "high"]
    assert set(curves["metric"]) == {"auc", "acc", "f1"} and curves.attrs == {"size": N_LQ, "replaced": False}
    acc = curves[curves.metric == "acc"].set_index("ratio")
    # r = 0 draws HQ images only (all right), r = 1 LQ only (all wrong), r = 0.5 three of each.
    assert acc.loc[0.0, ["mean", "low", "high"]].tolist() == [1.0, 1.0, 1.0]
    assert acc.loc[1.0, ["mean", "low", "high"]].tolist() == [0.0, 0.0, 0.0]
    assert acc.loc[0.5, ["mean", "low", "high"]].tolist() == [0.5, 0.5, 0.5]
    auc = curves[curves.metric == "auc"].set_index("ratio")
    assert auc.loc[0.0, "mean"] == 1.0 and auc.loc[1.0, "mean"] == 0.0


def test_lq_ratio_draws_fixed_size_and_replacement_flag():
    pack = hand_made_pack()
    draws = lq_ratio_draws(pack, ratios=[0.0, 0.3], repeats=4, size=8)  # 8 > 6 LQ images: r=0.3 needs only 2
    assert draws.attrs == {"size": 8, "replaced": False} and len(draws) == 2 * 4 * 3
    assert lq_ratio_draws(pack, ratios=[1.0], repeats=2, size=8).attrs["replaced"]  # 8 LQ from 6: repeats
    again = lq_ratio_draws(pack, ratios=[0.3], repeats=4, size=8)
    assert again["value"].tolist() == draws[draws.ratio == 0.3]["value"].tolist()  # seeded


def draws_one_by_one(pack: ResultsPack, ratios, size: int, repeats: int, seed: int, replace: bool) -> pd.DataFrame:
    """The LQ-ratio draws as they were computed before numpy took over: one scikit-learn call per draw."""
    labels, probs = pack.predictions["diagnosis"].to_numpy(), pack.probabilities("diagnosis")
    lq, hq = quality_groups(pack.predictions["quality"].to_numpy(), pack.num_classes("quality"))
    rows = []
    for ratio in np.round(np.asarray(ratios, dtype=float), 6):
        rng = np.random.default_rng([seed, int(ratio * 1_000_000)])
        for draw in range(repeats):
            index = draw_mix(lq, hq, ratio, size, rng, replace)
            scores = classification_metrics(labels[index], probs[index], hard_auc=False)
            rows += [(ratio, draw, metric, scores[metric]) for metric in ("auc", "acc", "f1")]
    return pd.DataFrame(rows, columns=["ratio", "draw", "metric", "value"])


@pytest.mark.parametrize("classes, replace", [(2, False), (3, False), (3, True)])
def test_lq_ratio_draws_equal_one_scikit_learn_call_per_draw(classes, replace):
    """The draws are scored all at once in numpy: the same draws, the same values (to rounding: the
    AUC from ranks, not the ROC trapezoid), NaN where a draw lacks a class, for a fixed seed."""
    rng = np.random.default_rng(7)
    n = 60
    quality = rng.integers(0, 2, n)
    diagnosis = rng.integers(0, classes, n)
    probs = rng.dirichlet(np.ones(classes), n).round(1)  # rounded: tied scores, as softmax outputs have
    probs[:, 0] = 1 - probs[:, 1:].sum(1)
    table = pd.DataFrame({"image": [f"{i}.png" for i in range(n)], "diagnosis": diagnosis, "quality": quality,
                          **{f"prob_diagnosis_{k}": probs[:, k] for k in range(classes)}})
    pack = ResultsPack(table, {}, {"model": {"num_diagnosis": classes, "num_quality": 2}})
    ratios = np.linspace(0, 1, 6)
    new = lq_ratio_draws(pack, ratios, size=9, repeats=40, seed=5, replace=replace)
    old = draws_one_by_one(pack, ratios, 9, 40, 5, replace)
    pd.testing.assert_frame_equal(new.drop(columns="value"), old.drop(columns="value"), check_dtype=False)
    assert np.isnan(old["value"]).any() if classes == 3 else True  # small draws lacking a class: undefined AUC
    np.testing.assert_allclose(new["value"], old["value"], rtol=0, atol=1e-12)  # NaN at the same places


def test_training_subset_has_the_share_and_is_reproducible():
    quality = np.array([1] * 40 + [0] * 20)
    index = lq_subset(quality, 2, 0.5, seed=3)
    # Every LQ image kept, and as many HQ ones as the share allows (±½ image of rounding).
    assert len(index) == largest_size(0.5, 20, 40) and (quality[index] == 0).sum() == 20
    assert abs((quality[index] == 0).mean() - 0.5) <= 0.5 / len(index) + 1e-12 and len(set(index)) == len(index)
    assert np.array_equal(index, lq_subset(quality, 2, 0.5, seed=3))
    assert (quality[lq_subset(quality, 2, 0.0)] == 1).all() and len(lq_subset(quality, 2, 0.0)) == 40


def test_ood_figure_has_a_line_and_band_per_run(tmp_path):
    curves = lq_ratio_curves(hand_made_pack(), ratios=[0, 1], repeats=5)
    fig = ood_figure({"a": curves, "b": curves}, metric="f1")
    assert len(fig.data) == 4 and [t.name for t in fig.data if t.showlegend is not False] == ["a", "b"]
    written = save_figure(fig, tmp_path / "ood", png=False)
    assert written == [tmp_path / "ood.html"] and (tmp_path / "plotly.min.js").is_file()  # offline HTML


def test_embedding_table_has_one_row_per_image():
    pack = hand_made_pack()
    table = embedding_table(pack, "diagnosis", "tsne", seed=0)
    assert list(table.columns) == ["x", "y", "image", "diagnosis", "quality", "joint", "correct", "pred_diagnosis"]
    assert len(table) == N_HQ + N_LQ and np.isfinite(table[["x", "y"]].to_numpy()).all()
    assert table["joint"].tolist() == (pack.predictions.quality * 2 + pack.predictions.diagnosis).tolist()
    assert np.array_equal(table[["x", "y"]], embedding_table(pack, "diagnosis", "tsne", seed=0)[["x", "y"]])
    fig = embedding_figure(table, "joint", class_names(pack))
    assert {t.name for t in fig.data} == {"non-COVID · LQ", "COVID-19 · LQ", "non-COVID · HQ", "COVID-19 · HQ"}
    assert set(label_text(table, "correct")) == {"right", "wrong"}
    colours = {t.name: t.marker.color for t in embedding_figure(table, "correct").data}
    assert colours == {"right": "#2a9d4b", "wrong": "#d62728"}  # green right, red wrong


def test_umap_embedding():
    xy = embed(hand_made_pack().features["quality"], "umap", seed=0)
    assert xy.shape == (N_HQ + N_LQ, 2) and np.isfinite(xy).all()


def test_umap_is_compiled_once_per_machine_not_once_per_process():
    """umap-learn's numba functions go through numba's disk cache (umap-learn leaves `cache=True`
    off): a new process loads the machine code (~0.1 s) instead of compiling it (13-30 s on 2
    cores). After a UMAP, each function it ran was compiled into the cache, or loaded from it."""
    from pathlib import Path

    from mkcnet.analysis.embedding import umap_module, umap_ready, warm_umap

    assert warm_umap() >= 0 and umap_ready()
    umap = umap_module()
    for function in (umap.umap_.smooth_knn_dist, umap.umap_.compute_membership_strengths,
                     umap.layouts._nb_optimize_layout_euclidean_single_epoch, umap.utils.fast_knn_indices):
        stats = function.stats
        assert stats.cache_path is not None, function  # None: numba's NullCache, compiled anew in each process
        assert sum(stats.cache_hits.values()) + sum(stats.cache_misses.values()) >= 1, function
        assert list(Path(stats.cache_path).glob(f"*.{function.py_func.__name__}-*.nbi")), function


def test_separation_scores_tell_which_branch_holds_which_label():
    scores = separation_scores(hand_made_pack()).set_index("branch")
    assert list(scores.index) == ["diagnosis", "quality"]
    assert scores.loc["diagnosis", "silhouette_diagnosis"] > 0.9 > abs(scores.loc["diagnosis", "silhouette_quality"])
    assert scores.loc["quality", "silhouette_quality"] > 0.9 > abs(scores.loc["quality", "silhouette_diagnosis"])


def test_missing_branch_is_a_clear_error():
    with pytest.raises(Exception, match="no 'auxiliary' features"):
        embedding_table(hand_made_pack(), "auxiliary")


def test_every_figure_of_the_workbench_shares_one_theme():
    """The LQ-ratio, referral, reliability and embedding figures sit side by side on the pages: one
    plotly template (the referral and reliability figures had plotly's grey default)."""
    import plotly.io as pio

    from mkcnet.analysis.referral import operating_points, referral_curves, referral_figure
    from mkcnet.analysis.reliability import reliability_figure

    pack = hand_made_pack()
    figures = {"ood": ood_figure({"a": lq_ratio_curves(pack, repeats=5)}, metric="f1"),
               "referral": referral_figure({"a": referral_curves(pack)}, {"a": operating_points(pack, 0.1, 0.1)}),
               "reliability": reliability_figure({"a": pack}),
               "embedding": embedding_figure(embedding_table(pack, "diagnosis", "pca"), "diagnosis")}
    white = pio.templates["plotly_white"].layout.plot_bgcolor
    assert {name: f.layout.template.layout.plot_bgcolor for name, f in figures.items()} == dict.fromkeys(figures, white)
