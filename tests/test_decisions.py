"""Decisions with a guarantee, each against an independent computation: prediction sets per quality
group against the conformal rank by hand, the referral threshold against fresh simulated draws,
and the checkpoint round trip of the sets (old checkpoints without them still load)."""

import math

import numpy as np
import pytest

from mkcnet.trust.conformal import (
    NO_QUALITY,
    PredictionSets,
    fit_prediction_sets,
    min_kept,
    risk_controlled_threshold,
    set_metrics,
)

HQ, LQ = 1, 0


def draw_scores(rng, group, size):
    """Scores 1 − p(true class) of a binary model, all above 0.5 (the true class is never the top
    class, so no set is widened by the top-class rule): HQ images low, LQ images spread out."""
    if group == HQ:
        return 0.5 + 0.2 * rng.beta(1, 3, size)
    return 0.5 + 0.5 * rng.random(size)


def as_probs(scores):
    """Binary probabilities whose true class (0) has probability 1 − score."""
    return np.stack([1 - scores, scores], axis=1)


def test_the_threshold_is_the_conformal_rank_by_hand():
    rng = np.random.default_rng(0)
    scores = draw_scores(rng, LQ, 19)
    sets = fit_prediction_sets(as_probs(scores), np.zeros(19, int), np.full(19, LQ), coverage=0.9)
    # ⌈(19 + 1)·0.9⌉ = 18: the 18th smallest of the 19 scores.
    assert sets.threshold(LQ) == pytest.approx(np.sort(scores)[17])
    assert sets.threshold(LQ, coverage=0.8) == pytest.approx(np.sort(scores)[15])  # ⌈20·0.8⌉ = 16
    assert sets.threshold(HQ) == math.inf  # a group without validation images: every class
    few = fit_prediction_sets(as_probs(scores[:8]), np.zeros(8, int), np.full(8, LQ), coverage=0.9)
    assert few.threshold(LQ) == math.inf  # ⌈9·0.9⌉ = 9 > 8 images: no finite rank
    assert few.sets(as_probs(np.array([0.99])), np.array([LQ])).tolist() == [[True, True]]


def test_set_coverage_per_quality_group_on_exchangeable_scores():
    """4000 repeats of n = 19 validation images per group plus one new image each: the Mondrian
    sets cover each group's new image 18/20 = 90 % of the time, as the rank argument says; the plain
    90th percentile (interpolated) covers 86 %, and one pooled threshold leaves the LQ group short."""
    rng = np.random.default_rng(1)
    n, repeats = 19, 4000
    hits = {"mondrian": {HQ: 0, LQ: 0}, "quantile": {HQ: 0, LQ: 0}, "pooled": {HQ: 0, LQ: 0}}
    for _ in range(repeats):
        val = {g: draw_scores(rng, g, n) for g in (HQ, LQ)}
        new = {g: draw_scores(rng, g, 1) for g in (HQ, LQ)}
        scores = np.concatenate([val[HQ], val[LQ]])
        groups = np.repeat([HQ, LQ], n)
        labels = np.zeros(2 * n, int)
        mondrian = fit_prediction_sets(as_probs(scores), labels, groups)
        pooled = fit_prediction_sets(as_probs(scores), labels, None)
        for g in (HQ, LQ):
            hits["mondrian"][g] += mondrian.sets(as_probs(new[g]), np.array([g]))[0, 0]
            hits["pooled"][g] += pooled.sets(as_probs(new[g]), None)[0, 0]
            hits["quantile"][g] += new[g][0] <= np.quantile(val[g], 0.9)
    cover = {rule: {g: h / repeats for g, h in by.items()} for rule, by in hits.items()}
    se = math.sqrt(0.09 / repeats)  # 0.0047
    for g in (HQ, LQ):
        assert abs(cover["mondrian"][g] - 18 / 20) < 3 * se, cover
        assert cover["quantile"][g] < 0.9 - 4 * se, cover  # the plain quantile falls short
    assert cover["pooled"][LQ] < 0.85 < 0.95 < cover["pooled"][HQ], cover


def test_set_metrics_by_hand():
    member = np.array([[True, False], [True, True], [False, True], [True, False]])
    labels, quality = np.array([0, 1, 0, -1]), np.array([1, 0, 1, 1])
    m = set_metrics(member, labels, quality, num_quality=2)
    assert m["n"] == 3 and m["coverage"] == pytest.approx(2 / 3) and m["size"] == pytest.approx(4 / 3)
    assert m["HQ.coverage"] == pytest.approx(1 / 2) and m["LQ.coverage"] == 1 and m["LQ.size"] == 2
    assert m["single"] == pytest.approx(2 / 3)


def test_prediction_sets_survive_the_header():
    rng = np.random.default_rng(2)
    sets = fit_prediction_sets(as_probs(draw_scores(rng, LQ, 30)), np.zeros(30, int), None, 0.9, "val.csv")
    back = PredictionSets.from_dict(sets.to_dict())
    assert back.threshold(NO_QUALITY) == pytest.approx(sets.threshold(NO_QUALITY), abs=1e-6)
    assert back.split == "val.csv" and back.coverage == 0.9


# -- referral with a bounded error --------------------------------------------------------------------
def simulated_split(rng, n):
    """Trust scores uniform on [0, 1]; an image is misdiagnosed with probability 0.3·(1 − s)². The
    error among images kept at threshold λ is then E[0.3(1 − S)² | S ≥ λ] = 0.1·(1 − λ)²."""
    score = rng.random(n)
    return rng.random(n) > 0.3 * (1 - score) ** 2, score


def true_risk(threshold):
    return 0.1 * (1 - threshold) ** 2


def test_the_risk_controlled_threshold_holds_on_fresh_draws():
    """In ≥ 1 − δ of 400 repeats the error among kept images of the whole population (not only the
    validation images) stays ≤ ε; picking the loosest threshold whose validation error is ≤ ε breaks
    it about half of the time."""
    rng = np.random.default_rng(3)
    epsilon, delta, repeats = 0.05, 0.1, 400
    over, naive_over, kept = 0, 0, []
    for _ in range(repeats):
        correct, score = simulated_split(rng, 500)
        point = risk_controlled_threshold(correct, score, epsilon, delta)
        assert not point.found or point.error <= epsilon
        over += point.found and true_risk(point.threshold) > epsilon
        kept.append(1 - point.threshold if point.found else 0.0)  # the population share kept
        order = np.argsort(-score)
        running = np.cumsum(~correct[order]) / np.arange(1, len(score) + 1)
        naive = score[order][np.flatnonzero(running <= epsilon).max()]
        naive_over += true_risk(naive) > epsilon
    assert over / repeats <= delta, over
    assert naive_over / repeats > 0.3, naive_over
    # Not vacuous: the best threshold keeps 1 − 0.293 = 70.7 % of the images; fixed-sequence testing
    # pays for its guarantee (it stops at the first grid point it cannot certify) but keeps most of that.
    assert np.mean(np.array(kept) > 0) > 0.9 and 0.4 < np.mean(kept) < 0.707


def test_no_threshold_when_the_split_cannot_show_the_bound():
    correct = np.array([True] * 20 + [False] * 5)
    point = risk_controlled_threshold(correct, np.linspace(1, 0.5, 25), epsilon=0.05, delta=0.1)
    assert min_kept(0.05, 0.1) == 45 and not point.found and point.kept == 0
    with pytest.raises(ValueError):
        risk_controlled_threshold(correct, np.ones(25), epsilon=0)


# -- the per-case robustness margin --------------------------------------------------------------------
FLAT = np.full((256, 256, 1), 128, np.uint8)
FAMILIES = ["ct.gaussian_noise", "ct.gaussian_blur", "ct.brightness_up"]


def noise_detector(threshold):
    """A synthetic model: COVID (1) when the image's pixel noise (std, 0-1 scale) exceeds `threshold`."""
    return lambda images: np.array([int(np.asarray(i, float).std() / 255 > threshold) for i in images])


@pytest.mark.parametrize(("threshold", "flips_at"), [(0.03, 2), (0.05, 3), (0.08, 4), (0.12, 5), (0.18, None)])
def test_the_margin_flips_exactly_where_the_noise_crosses_the_decision(threshold, flips_at):
    """Gaussian noise's severity bands are σ 0.01-0.03-0.05-0.08-0.12-0.18: a model that decides by the
    noise level flips at the first severity whose band lies above its threshold; blur and brightness
    leave a flat image's noise at 0, so it holds through 5 for them."""
    from mkcnet.inference.robustness import flip_severities

    margin = flip_severities(FLAT, FAMILIES, noise_detector(threshold), seed=0)
    assert margin.diagnosis == 0
    assert margin.flips == {"ct.gaussian_noise": flips_at, "ct.gaussian_blur": None, "ct.brightness_up": None}
    if flips_at is None:
        assert margin.weakest is None and margin.text() == "holds through severity 5 of all 3 families"
    else:
        assert margin.flipped_to == {"ct.gaussian_noise": 1} and margin.weakest == flips_at
        assert margin.text(["non-COVID", "COVID-19"]) == (
            f"flips at gaussian noise {flips_at} (to COVID-19); holds through severity 5 of the other 2 families "
            "(gaussian blur, brightness up)")
        assert margin.columns()["robust_gaussian_noise"] == flips_at and margin.columns()["robust_gaussian_blur"] == "holds"


def test_a_model_margin_is_one_batched_forward():
    import torch

    from mkcnet.checkpoint import LoadedModel
    from mkcnet.inference.robustness import robustness_margin
    from mkcnet.presets import build_run_config

    class Counting(torch.nn.Module):
        """Diagnosis 1 for images brighter than the clean one; records every batch it sees."""

        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(()))
            self.batches = []

        def forward(self, x):
            self.batches.append(len(x))
            mean = x.mean(dim=(1, 2, 3))
            logits = torch.stack([torch.zeros_like(mean), (mean - mean[0] - 0.05) * self.scale], 1)
            return type("Out", (), {"logits": lambda self, head: logits})()

    config = build_run_config("ct-iqad", "cpu", "vanilla", image_size=32)
    net = Counting()
    margin = robustness_margin(LoadedModel(net, None, config), np.full((40, 60, 1), 100, np.uint8),
                               families=["ct.brightness_up", "ct.brightness_down"])
    assert net.batches == [1 + 2 * 5]
    # brightness up by δ ≥ 0.03 moves the normalised mean by ≥ 0.03 / 0.29 = 0.1 > 0.05: flips at 1.
    assert margin.flips["ct.brightness_down"] is None and margin.flips["ct.brightness_up"] == 1


# -- the words ------------------------------------------------------------------------------------------
def test_the_reading_says_the_set_and_the_margin():
    from types import SimpleNamespace

    from mkcnet.inference.robustness import Margin
    from mkcnet.trust.calibration import Calibration
    from mkcnet.trust.guard import Verdict
    from mkcnet.workbench.reading import REASSURANCE, explain

    sets = fit_prediction_sets(as_probs(np.full(30, 0.3)), np.zeros(30, int), None)
    model = SimpleNamespace(
        loaded=SimpleNamespace(calibration=Calibration({"diagnosis": 1.0}), guard=object(), prediction_sets=sets),
        entry=SimpleNamespace(dataset="tiny", card={}),
        class_names=lambda head: ("non-COVID", "COVID-19") if head == "diagnosis" else ("LQ", "HQ"))
    d, q, fine = np.array([0.05, 0.95]), np.array([0.05, 0.95]), Verdict(False, 0.3)
    one = explain(model, d, q, fine, ("COVID-19",))
    assert "At 90% confidence: **COVID-19** only." in one and REASSURANCE in one
    two = explain(model, d, q, fine, ("non-COVID", "COVID-19"))
    assert "cannot choose between non-COVID and COVID-19: refer" in two and REASSURANCE not in two
    margin = Margin(1, {"ct.gaussian_noise": 2, "ct.gaussian_blur": None}, {"ct.gaussian_noise": 0})
    assert "the diagnosis flips at gaussian noise 2 (to non-COVID); holds through severity 5 of the other 1 family " \
           "(gaussian blur)." in explain(model, d, q, fine, ("COVID-19",), margin)
    model.loaded.prediction_sets = None
    assert "No prediction sets" in explain(model, d, q, fine)
