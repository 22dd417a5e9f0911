import math

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from mkcnet.losses import auxiliary_loss, entropy_regulariser, focal_loss
from mkcnet.metrics import classification_metrics, draw_metrics, evaluation_metrics


def test_focal_loss_equals_hand_computation():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
    target = torch.tensor([0, 2])
    expected = 0.0
    for row, t in zip(logits.tolist(), target.tolist()):
        z = [math.exp(v) for v in row]
        p = z[t] / sum(z)
        expected += -((1 - p) ** 2) * math.log(p)
    assert focal_loss(logits, target, gamma=2.0).item() == pytest.approx(expected / 2, rel=1e-6)


def test_focal_loss_with_gamma_zero_is_cross_entropy():
    logits, target = torch.randn(5, 4), torch.randint(0, 4, (5,))
    assert torch.allclose(focal_loss(logits, target, 0.0), torch.nn.functional.cross_entropy(logits, target))


def test_soft_focal_loss_ignores_masked_zeros_and_divides_by_meta_length():
    logits = torch.tensor([[1.0, -2.0, 0.5, 0.0]])
    soft = torch.tensor([[0.25, 0.75, 0.0, 0.0]])
    p = logits.softmax(1)[0]
    hand = -(0.25 * (1 - p[0]) ** 2 * p[0].log() + 0.75 * (1 - p[1]) ** 2 * p[1].log())
    assert auxiliary_loss(logits, soft, meta_length=2).item() == pytest.approx(hand.item() / 2, rel=1e-6)


def test_entropy_regulariser_is_negative_entropy_of_the_batch_mean():
    uniform = torch.full((4, 4), 0.25)
    peaked = torch.tensor([[1.0, 0, 0, 0]] * 4)
    assert entropy_regulariser(uniform).item() == pytest.approx(-math.log(4), rel=1e-6)
    assert entropy_regulariser(peaked).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("num_classes", [2, 3])
def test_metrics_equal_scikit_learn(num_classes):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, num_classes, 60)
    probs = rng.dirichlet(np.ones(num_classes), 60)
    preds = probs.argmax(1)
    m = classification_metrics(labels, probs)
    assert m["acc"] == pytest.approx(accuracy_score(labels, preds))
    if num_classes == 2:
        assert m["f1"] == pytest.approx(f1_score(labels, preds))
        assert m["auc"] == pytest.approx(roc_auc_score(labels, probs[:, 1]))
        assert m["auc_hard"] == pytest.approx(roc_auc_score(labels, preds))
    else:
        assert m["f1"] == pytest.approx(f1_score(labels, preds, average="macro"))
        assert m["auc"] == pytest.approx(roc_auc_score(labels, probs, multi_class="ovo", average="macro"))


def test_metrics_per_quality_group():
    diagnosis = np.array([0, 1, 0, 1, 0, 1])
    quality = np.array([1, 1, 1, 0, 0, 0])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.6, 0.4], [0.4, 0.6], [0.3, 0.7]])
    qprobs = np.array([[0.1, 0.9]] * 3 + [[0.8, 0.2]] * 3)
    m = evaluation_metrics(diagnosis, probs, quality, qprobs, num_quality=2)
    assert m["diagnosis.HQ.acc"] == 1.0 and m["diagnosis.HQ.n"] == 3
    assert m["diagnosis.LQ.acc"] == pytest.approx(1 / 3)
    assert m["quality.acc"] == 1.0
    assert m["diagnosis.acc"] == pytest.approx(4 / 6)


@pytest.mark.parametrize("num_classes", [2, 3, 4])
def test_draw_metrics_equal_classification_metrics_row_by_row(num_classes):
    """Many draws scored at once (the LQ-ratio curves) as one scikit-learn call per draw scores
    them: tied scores, draws lacking a class (AUC undefined: NaN; F1 of an absent class: 0)."""
    rng = np.random.default_rng(num_classes)
    labels = rng.integers(0, num_classes, (300, 12))
    labels[0] = 0  # one class only
    probs = rng.dirichlet(np.ones(num_classes), (300, 12)).round(1) + 1e-3  # ties
    got = draw_metrics(labels, probs)
    for r in range(len(labels)):
        want = classification_metrics(labels[r], probs[r], hard_auc=False)
        for metric in ("acc", "f1", "auc"):
            np.testing.assert_allclose(got[metric][r], want[metric], rtol=0, atol=1e-12, err_msg=f"{metric} row {r}")
    assert np.isnan(got["auc"][0]) and np.isfinite(got["auc"]).sum() > 100
