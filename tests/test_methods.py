"""Every method of the table (baselines, MKCNet, ablations) trains through the one Trainer."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mkcnet.checkpoint import load_checkpoint
from mkcnet.data.dataset import Batch, ImageSet, read_split
from mkcnet.methods import METHODS, get_method
from mkcnet.models import build_networks
from mkcnet.models.meta_learner import RandomLabels
from mkcnet.training.gradients import gradient_cosines
from mkcnet.training.trainer import Trainer
from tests.conftest import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


def small_config(method: str, **overrides):
    """The tiny config with a narrow backbone: 14 methods train in seconds."""
    return tiny_config(method, backbone_args={"channels": [16, 16, 32, 32]}, **overrides)


def load(root, split="train.csv", config=None):
    mc = (config or small_config("mkcnet")).model
    return ImageSet.load(read_split(root / split, root, None, mc.num_diagnosis, mc.num_quality), mc.input,
                         progress=False)


def history(run_dir):
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_trains_and_reloads(name, tiny_dataset, tmp_path):
    method = get_method(name)
    config = small_config(name)
    Trainer(config, tmp_path, progress=False).fit(load(tiny_dataset), load(tiny_dataset, "val.csv"))
    row = history(tmp_path)[0]
    assert np.isfinite(row["loss.total"]) and "val.diagnosis.auc" in row
    assert ("loss.auxiliary" in row) == method.auxiliary and ("meta_outer" in row) == method.meta_learner
    # Task conflict is logged wherever a second loss reaches the shared backbone.
    assert ("grad_cos.diagnosis_quality" in row) == (method.quality and name != "detach")
    assert ("grad_cos.diagnosis_auxiliary" in row) == method.auxiliary
    assert all(-1 <= v <= 1 for k, v in row.items() if k.startswith("grad_cos."))
    model = load_checkpoint(tmp_path)  # rebuilt from the checkpoint alone, same architecture
    out = model.task_net(torch.zeros(2, 1, 32, 32))
    assert out.diagnosis.shape == (2, 2) and (out.quality is None) != method.quality
    assert (out.auxiliary is None) != method.auxiliary
    assert {"diagnosis", "fused"} <= set(out.features) and "backbone" in out.maps


def test_ablation_switches_reach_the_network():
    def net(name):
        return build_networks(small_config(name).model)

    assert net("mkcnet-no-gab")[0].branches["diagnosis"].spatial is None
    no_mab, _ = net("mkcnet-no-mab")
    assert no_mab.assistance is None and no_mab.heads["diagnosis"].fc1.in_features == 32  # diagnosis feature only
    assert net("mkcnet")[0].heads["diagnosis"].fc1.in_features == 64  # + the assisted auxiliary feature
    assert net("mkcnet-no-meta")[1] is None and net("maxl")[1].config.mask == "diagnosis"
    for mask in ("diagnosis", "quality", "none"):
        assert net(f"mkcnet-mask-{mask}")[1].config.mask == mask


def test_random_labels_are_fixed_per_image_and_masked():
    config = small_config("mkcnet-no-meta").model
    labels = RandomLabels(config, 10, seed=0)
    d, q = torch.tensor([0, 1, 1]), torch.tensor([1, 0, 1])
    a = labels.labels(torch.tensor([3, 4, 5]), d, q)
    assert torch.equal(a, RandomLabels(config, 10, seed=0).labels(torch.tensor([3, 4, 5]), d, q))
    assert torch.allclose(a.sum(1), torch.ones(3))
    block = q * 2 + d  # JEM block of each image holds all its mass
    for i in range(3):
        assert a[i, block[i] * 5:(block[i] + 1) * 5].sum() > 0.999
    assert not torch.equal(a[1], labels.labels(torch.tensor([6]), d[1:2], q[1:2])[0])  # another image


def test_detach_keeps_each_loss_on_its_own_backbone():
    torch.manual_seed(0)
    config = small_config("detach")
    net, _ = build_networks(config.model)
    out = net(torch.randn(4, 1, 32, 32))
    out.quality.sum().backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in net.backbone.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.quality_backbone.parameters())


def test_gradient_probe_leaves_the_model_untouched():
    torch.manual_seed(0)
    net, _ = build_networks(small_config("multitask").model)
    net.train()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    batch = Batch(torch.randn(8, 1, 32, 32), torch.tensor([0, 1] * 4), torch.tensor([0, 0, 1, 1] * 2), torch.arange(8))
    cos = gradient_cosines(net, batch, None, 2.0, 5)
    assert set(cos) == {"grad_cos.diagnosis_quality"} and -1 <= cos["grad_cos.diagnosis_quality"] <= 1
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())  # BN statistics too
    assert all(p.grad is None for p in net.parameters())


def test_train_lq_ratio_subsamples_the_training_split(tiny_dataset, tmp_path):
    config = small_config("multitask", train_lq_ratio=0.25)
    Trainer(config, tmp_path, progress=False).fit(load(tiny_dataset))
    # The tiny split has 6 LQ and 6 HQ images: a 25 % LQ share keeps all 6 HQ and 2 LQ.
    assert history(tmp_path)[0]["train.n"] == 8


def test_docs_describe_every_method():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "experiments.md").read_text(encoding="utf-8")
    missing = [name for name in METHODS if f"| `{name}` |" not in doc]
    assert not missing, f"docs/experiments.md lacks a row for {missing}"
