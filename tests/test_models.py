import pytest
import torch
from torch.func import functional_call

from mkcnet.models import build_networks, masked_softmax
from mkcnet.models.meta_learner import block_index
from tests.conftest import tiny_config


@pytest.mark.parametrize("backbone", ["resnet10t", "resnet18"])
@pytest.mark.parametrize("channels", [1, 3])
def test_task_net_output_shapes(backbone, channels):
    config = tiny_config("mkcnet", channels=channels, backbone=backbone)
    task_net, meta = build_networks(config.model)
    out = task_net(torch.randn(3, channels, 64, 64))
    m = config.model
    assert out.diagnosis.shape == (3, m.num_diagnosis)
    assert out.quality.shape == (3, m.num_quality)
    assert out.auxiliary.shape == (3, m.num_diagnosis * m.num_quality * m.meta_length)
    assert out.features["fused"].shape == (3, 2 * m.feature_dim)
    for branch in ("diagnosis", "quality", "auxiliary"):
        assert out.features[branch].shape == (3, m.feature_dim)
        fmap = out.maps[branch]
        assert fmap.dim() == 4 and fmap.shape[2:] == out.maps["backbone"].shape[2:]  # maps stay spatial
        assert out.attention[branch].shape == (3, 1, *fmap.shape[2:])
    assert meta(torch.randn(3, channels, 64, 64)).shape == out.auxiliary.shape


def test_baselines_lack_heads():
    vanilla, meta = build_networks(tiny_config("vanilla").model)
    out = vanilla(torch.randn(2, 1, 32, 32))
    assert meta is None and out.quality is None and out.auxiliary is None
    multitask, meta = build_networks(tiny_config("multitask").model)
    out = multitask(torch.randn(2, 1, 32, 32))
    assert meta is None and out.quality.shape == (2, 2) and out.auxiliary is None


def test_spatial_attention_is_not_a_no_op():
    torch.manual_seed(0)
    task_net, _ = build_networks(tiny_config().model)
    task_net.eval()
    gate = task_net(torch.randn(2, 1, 64, 64)).attention["diagnosis"]
    assert gate.shape[-1] > 1 and gate.std() > 0  # varies over space (the official code pools first)


def test_jem_masked_softmax_sums_to_one_inside_block_only():
    meta_length, nd, nq = 5, 3, 2
    logits = torch.randn(6, nd * nq * meta_length)
    d = torch.tensor([0, 1, 2, 0, 1, 2])
    q = torch.tensor([0, 0, 0, 1, 1, 1])
    block = block_index("joint", d, q, nd)
    assert block.tolist() == [0, 1, 2, 3, 4, 5]  # m = q·num_diagnosis + d
    labels = masked_softmax(logits, block, meta_length)
    for i in range(6):
        inside = labels[i, block[i] * meta_length:(block[i] + 1) * meta_length]
        assert torch.allclose(inside.sum(), torch.tensor(1.0))
        assert (inside > 0).all()
        assert labels[i].sum() - inside.sum() < 1e-6


def test_functional_path_equals_module_forward():
    torch.manual_seed(0)
    task_net, _ = build_networks(tiny_config().model)
    task_net.eval()
    x = torch.randn(2, 1, 32, 32)
    params = dict(task_net.named_parameters())
    buffers = dict(task_net.named_buffers())
    a, b = task_net(x), functional_call(task_net, (params, buffers), (x,))
    for head in ("diagnosis", "quality", "auxiliary"):
        assert torch.equal(a.logits(head), b.logits(head))
