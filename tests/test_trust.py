"""Calibrated confidence and the out-of-distribution guard, each against an independent computation:
temperature scaling on a hand-made miscalibrated table, ECE and Brier by hand, a guard that must
separate two synthetic distributions, and a reading that never reassures when it should not."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from mkcnet.metrics import brier_score, expected_calibration_error
from mkcnet.trust.calibration import Band, Calibration, fit_calibration, fit_temperature, nll, softmax
from mkcnet.trust.guard import Guard, InputRange, Verdict, conformal_threshold, fit_guard, input_statistics
from mkcnet.workbench.reading import CONFIDENT, REASSURANCE, explain


def overconfident_table(n=4000, true_t=3.0, seed=0):
    """Labels drawn from softmax(z) while the model reports z·true_t: over-confident by true_t."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, 3))
    p = softmax(z)
    labels = np.array([rng.choice(3, p=row) for row in p])
    return z * true_t, labels


def test_temperature_scaling_lowers_nll_keeps_accuracy_and_finds_the_true_temperature():
    logits, labels = overconfident_table()
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(3.0, rel=0.1)
    assert nll(logits, labels, t) < nll(logits, labels) - 0.1
    grid = np.linspace(0.5, 6, 200)  # an independent search: no T on the grid does better
    assert nll(logits, labels, t) <= min(nll(logits, labels, g) for g in grid) + 1e-4
    assert (softmax(logits, t).argmax(1) == logits.argmax(1)).all()
    ece_before = expected_calibration_error(labels, softmax(logits))
    assert ece_before > 0.1 and expected_calibration_error(labels, softmax(logits, t)) < ece_before / 3


def test_ece_and_brier_by_hand():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    labels = np.array([0, 1, 1, 1])
    # 15 bins: confidences 0.9, 0.6, 0.7, 0.8 fall into four bins, each of one image.
    assert expected_calibration_error(labels, probs) == pytest.approx((0.1 + 0.6 + 0.3 + 0.2) / 4)
    assert brier_score(labels, probs) == pytest.approx((0.02 + 0.72 + 0.18 + 0.08) / 4)


def test_fit_calibration_bands_count_the_validation_images():
    logits, labels = overconfident_table(n=400)
    quality_logits = np.random.default_rng(1).normal(0, 1, (400, 2))
    c = fit_calibration({"diagnosis": logits, "quality": quality_logits}, labels, np.ones(400, int), 2, "val.csv")
    assert sum(b.n for b in c.bands) == 400 and all(b.n >= 10 for b in c.bands)
    probs = c.probabilities("diagnosis", logits)
    right = probs.argmax(1) == labels
    q = quality_logits.argmax(1)
    for b in c.bands:  # each band's count, recomputed from its definition
        rows = (q == b.quality) & (probs.max(1) >= b.low) & (probs.max(1) <= b.high)
        assert rows.sum() >= b.n and right[rows].sum() >= b.correct
    assert c.scores["diagnosis.after.NLL"] < c.scores["diagnosis.before.NLL"]
    assert Calibration.from_dict(c.to_dict()) == c


@pytest.mark.parametrize("method", ["mahalanobis", "knn"])
def test_guard_separates_two_distributions(method):
    rng = np.random.default_rng(0)
    cov = np.diag(np.linspace(0.2, 2.0, 16))
    train = rng.multivariate_normal(np.zeros(16), cov, 600)
    labels = (train[:, 0] > 0).astype(int)
    val = rng.multivariate_normal(np.zeros(16), cov, 400)
    far = rng.multivariate_normal(np.r_[np.full(8, 3.0), np.zeros(8)], cov, 400)
    stats = np.tile([0.0, 1.0], (600, 1))
    guard = fit_guard(train, labels, val, stats, method)
    grey = [(0.0, 1.0)] * 400
    share = lambda x: np.mean([v.ood for v in guard.verdicts(x, grey)])  # noqa: E731
    assert share(val) == pytest.approx(19 / 400)  # the threshold is the 381st of 400 validation distances
    assert share(far) > 0.95
    fresh = rng.multivariate_normal(np.zeros(16), cov, 400)
    assert share(fresh) < 0.12


def test_conformal_threshold_by_hand():
    ranked = np.arange(1.0, 101.0)
    assert conformal_threshold(ranked[:19]) == 19  # ⌈20 · 0.95⌉ = 19: the largest of 19
    assert conformal_threshold(ranked[:39][::-1]) == 38  # ⌈40 · 0.95⌉ = 38, whatever the order
    assert conformal_threshold(ranked[:60]) == 58  # ⌈61 · 0.95⌉ = 58 (the 95th percentile would be 57.05)
    assert conformal_threshold(ranked[:10]) == 10  # too few for 95 %: the largest
    assert conformal_threshold(ranked[:60], 0.9) == 55  # ⌈61 · 0.9⌉ = 55


def test_conformal_threshold_flags_at_most_five_percent_of_unseen_images():
    """Exchangeable images: a new one lies above the k-th of n with probability exactly 1 - k/(n+1),
    here 3/61 for n = 60, whatever the distribution (a heavy-tailed one here). A plain 95th
    percentile of the same 60 images flags about 6.5 %."""
    rng = np.random.default_rng(0)
    trials, n = 20000, 60
    draws = rng.lognormal(0, 1.5, (trials, n + 1))
    thresholds = np.array([conformal_threshold(row[:n]) for row in draws])
    flagged = (draws[:, n] > thresholds).mean()
    assert flagged == pytest.approx(3 / 61, abs=0.005)
    percentile = (draws[:, n] > np.quantile(draws[:, :n], 0.95, axis=1)).mean()
    assert percentile > 0.058  # what the 95th percentile rule flagged on held-out CT-IQAD images, too


def test_mahalanobis_distance_by_hand():
    means = np.array([[0.0, 0.0], [4.0, 0.0]])
    precision = np.diag([1.0, 0.25])
    guard = Guard("mahalanobis", means, precision, 1.0, InputRange((0, 1), (0.5, 2)))
    # (3, 2): to class 1: sqrt(1 + 4/4) = sqrt 2; to class 0: sqrt(9 + 1) = sqrt 10.
    assert guard.distance(np.array([[3.0, 2.0]])) == pytest.approx([np.sqrt(2)])


def test_input_checks_catch_the_wrong_modality():
    grey = np.full((64, 64, 1), 90, np.uint8)
    colour = np.stack([np.full((64, 96), 200), np.full((64, 96), 80), np.full((64, 96), 30)], -1).astype(np.uint8)
    assert input_statistics(grey) == (0.0, 1.0)
    assert input_statistics(colour) == pytest.approx((170 / 255, 1.5))
    ct = InputRange.fit(np.tile([0.0, 1.0], (50, 1)))
    assert "colour image" in ct.problem(*input_statistics(colour))
    assert ct.problem(*input_statistics(grey)) == ""
    assert "aspect ratio" in ct.problem(0.0, 1.5)
    fundus = InputRange.fit(np.tile([0.5, 1.0], (50, 1)))
    assert "greyscale image" in fundus.problem(*input_statistics(grey))


def fake_model(calibration, guard_present=True):
    names = {"diagnosis": ("no", "yes"), "quality": ("LQ", "HQ")}
    entry = SimpleNamespace(dataset="tiny", card={})
    return SimpleNamespace(loaded=SimpleNamespace(calibration=calibration, guard=object() if guard_present else None),
                           entry=entry, class_names=names.__getitem__)


def test_reading_never_reassures_when_uncertain_or_flagged():
    rng = np.random.default_rng(0)
    calibration = Calibration({"diagnosis": 1.0, "quality": 1.0},
                              [Band(q, 0.5, 1.0, 40, 30) for q in (0, 1)])
    reassured = 0
    for _ in range(2000):
        p, qp = rng.uniform(0.5, 1), rng.uniform(0.5, 1)
        d = np.array([p, 1 - p])[:: rng.choice([1, -1])]
        q = np.array([1 - qp, qp])[:: rng.choice([1, -1])]
        flagged = rng.random() < 0.3
        verdict = Verdict(flagged, float(rng.uniform(0, 3)), "its features are far" if flagged else "")
        text = explain(fake_model(calibration), d, q, verdict)
        should_not = max(d) < CONFIDENT or max(q) < CONFIDENT or flagged or q.argmax() != 1
        if should_not:
            assert REASSURANCE not in text, text
        reassured += REASSURANCE in text
        if flagged:
            assert "does not look like the model's training data" in text and "Do not use" in text
        elif max(d) < CONFIDENT:
            assert text.startswith("**Uncertain:**")
    assert reassured > 100  # the good case does reassure: the property is not vacuous
    text = explain(fake_model(calibration), np.array([0.95, 0.05]), np.array([0.1, 0.9]), Verdict(False, 0.4))
    assert "right 75% of the time (30 of 40)" in text


def test_calibrate_stores_temperatures_and_guard_and_predict_reports_them(tmp_path, tiny_dataset, capsys):
    from mkcnet.checkpoint import load_checkpoint
    from mkcnet.cli import main

    run = tmp_path / "run"
    flags = ["--dataset", "ct-iqad", "--backbone", "resnet10t", "--meta-backbone", "resnet10t", "--image-size", "32",
             "--batch-size", "8", "--quiet", "--device", "cpu", "--method", "vanilla", "--epochs", "1"]
    assert main(["train", "--root", str(tiny_dataset), "--out", str(run), *flags]) == 0
    assert "calibrated best.safetensors" in capsys.readouterr().out  # training calibrates its best checkpoint
    model = load_checkpoint(run)
    assert set(model.calibration.temperatures) == {"diagnosis"}  # vanilla: no quality head
    assert model.guard is not None and model.guard.threshold > 0 and "val" in model.guard.measured
    colour = tmp_path / "colour.png"
    from PIL import Image

    Image.fromarray(np.dstack([np.full((40, 40), v, np.uint8) for v in (220, 90, 20)])).save(colour)
    assert main(["predict", str(run), str(tiny_dataset / "Images"), str(colour), "--format", "csv",
                 "-o", str(tmp_path / "p.csv")]) == 0
    table = pd.read_csv(tmp_path / "p.csv")
    assert {"ood", "ood_score", "ood_reason", "calibrated"} <= set(table.columns)
    assert table["ood"].iloc[-1] and "colour image" in table["ood_reason"].iloc[-1]
    assert table["calibrated"].all()
    t = model.calibration.temperatures["diagnosis"]
    assert abs(t - 1) > 0.02, t  # else the comparison below could not tell calibrated from raw
    # The CSV's probabilities are softmax(logits / T): recomputed here from the network's own logits.
    import torch

    from mkcnet.data.dataset import normalise
    from mkcnet.data.images import load_resized

    first = tiny_dataset / "Images" / sorted(p.name for p in (tiny_dataset / "Images").iterdir())[0]
    x = normalise(torch.from_numpy(load_resized(first, model.config.model.input).copy())[None], model.config.model.input)
    with torch.no_grad():
        z = model.task_net(x).diagnosis.double()
    expected = torch.softmax(z / t, 1)[0, 1].item()
    assert table["p_diagnosis_COVID-19"].iloc[0] == pytest.approx(expected, abs=1e-4)


def test_risk_coverage_by_hand():
    from mkcnet.analysis.referral import risk_coverage

    correct = np.array([1, 0, 1, 1, 0], bool)
    score = np.array([0.9, 0.8, 0.7, 0.95, 0.1])
    # Ranked: 0.95 (right), 0.9 (right), 0.8 (wrong), 0.7 (right), 0.1 (wrong).
    curve = risk_coverage(correct, score)
    assert curve["coverage"].tolist() == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert curve["risk"].tolist() == pytest.approx([0, 0, 1 / 3, 1 / 4, 2 / 5])


def test_referral_curves_of_a_pack_have_every_rule():
    from mkcnet.analysis.referral import referral_curves
    from mkcnet.inference.predict import Predictions
    from mkcnet.inference.results import ResultsPack

    d = np.array([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3], [0.2, 0.8]])
    q = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    pack = ResultsPack.build(["a", "b", "c", "d"], np.array([0, 0, 0, 1]), np.array([1, 0, 1, 0]),
                             Predictions(d, q), {})
    curves = referral_curves(pack)
    assert set(curves["rule"]) == {"quality", "confidence", "both"}
    quality = curves[curves["rule"] == "quality"]  # order by P(HQ): a, c, d, b → right, right, right, wrong
    assert quality["risk"].tolist() == pytest.approx([0, 0, 0, 0.25])
    assert quality["aurc"].iloc[0] == pytest.approx(0.0625)


def test_reliability_recovers_the_raw_softmax_from_a_calibrated_pack():
    from mkcnet.analysis.reliability import pack_probabilities, reliability_curve
    from mkcnet.inference.predict import Predictions
    from mkcnet.inference.results import ResultsPack

    logits, labels = overconfident_table(n=300)
    pack = ResultsPack.build([str(i) for i in range(300)], labels, np.ones(300, int),
                             Predictions(softmax(logits, 3.0)), {"temperatures": {"diagnosis": 3.0}})
    probs = pack_probabilities(pack)
    assert np.allclose(probs["raw"], softmax(logits), atol=1e-6)
    curve = reliability_curve(labels, probs["calibrated"])
    assert curve["n"].sum() == 300 and ((curve["accuracy"] - curve["confidence"]).abs() < 0.2).all()
