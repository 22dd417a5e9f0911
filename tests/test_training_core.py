"""The training core against independent computations: the exact meta gradient against a float64
central finite difference of a separately written meta objective; resume bit-identical to an
uninterrupted run for every method; functional_call in train mode; a split of size ≡ 1 (mod
batch); the paper preset end to end at tiny scale; and models that learn."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from torch.func import functional_call

from mkcnet.data.dataset import ImageSet, read_split
from mkcnet.errors import UserError
from mkcnet.methods import METHODS
from mkcnet.models import build_networks
from mkcnet.training.meta_step import PseudoStep, meta_gradients
from mkcnet.training.trainer import Trainer
from tests.conftest import tiny_config, write_dataset


def image_set(root, split: str, config, n: int | None = None) -> ImageSet:
    mc = config.model
    data = ImageSet.load(read_split(root / split, root, None, mc.num_diagnosis, mc.num_quality), mc.input,
                         progress=False)
    return data.subset(np.arange(n)) if n is not None else data


# ---- (1) the exact meta gradient against finite differences ----------------------------------------

def focal(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Softmax focal loss against a (soft) target, batch mean: written here from its definition."""
    p = logits.softmax(1)
    return -(target * (1 - p) ** gamma * torch.log(p)).sum(1).mean()


def meta_objective(task_net, meta, batch, lr, weight_decay, entropy_weight, scope="network") -> torch.Tensor:
    """φ → L_d(θ̃) + L_q(θ̃) + w·R(y_ω(φ)), with θ̃ = θ − α(∇θ[L_d + L_q + L_ω/ψ] + λθ), from scratch.
    scope "heads": θ̃ moves every parameter but the backbone's, which stays as it is; "top" also moves
    the backbone's last stage (layer4 of the ResNet used here)."""
    cfg = task_net.config
    theta = {n: p for n, p in task_net.named_parameters()}
    buffers = {n: b.clone() for n, b in task_net.named_buffers()}
    one_hot = lambda y, k: torch.nn.functional.one_hot(y, k).to(batch.images.dtype)  # noqa: E731
    logits = meta(batch.images)
    owner = torch.arange(logits.shape[1]) // cfg.meta_length
    block = batch.quality * cfg.num_diagnosis + batch.diagnosis
    labels = logits.masked_fill(owner[None] != block[:, None], float("-inf")).softmax(1)
    out = functional_call(task_net, (theta, buffers), (batch.images,))
    inner = (focal(out.diagnosis, one_hot(batch.diagnosis, cfg.num_diagnosis))
             + focal(out.quality, one_hot(batch.quality, cfg.num_quality))
             + focal(out.auxiliary, labels) / cfg.meta_length)
    grads = torch.autograd.grad(inner, list(theta.values()), create_graph=True, allow_unused=True)
    held = {"network": (), "heads": ("backbone.",), "top": tuple(f"backbone.{m}" for m in
                                                                 ("conv1", "bn1", "layer1", "layer2", "layer3"))}[scope]
    fast = {n: p if n.startswith(held) else p - lr * ((g if g is not None else 0) + weight_decay * p)
            for (n, p), g in zip(theta.items(), grads)}
    out = functional_call(task_net, (fast, {n: b.clone() for n, b in task_net.named_buffers()}), (batch.images,))
    mean_label = labels.mean(0)
    regulariser = (mean_label * torch.log(mean_label + 1e-20)).sum()
    return (focal(out.diagnosis, one_hot(batch.diagnosis, cfg.num_diagnosis))
            + focal(out.quality, one_hot(batch.quality, cfg.num_quality)) + entropy_weight * regulariser)


@pytest.fixture(scope="module")
def meta_problem(tiny_dataset):
    torch.manual_seed(0)
    config = tiny_config("mkcnet")
    task_net, meta = build_networks(config.model)
    task_net, meta = task_net.double().train(), meta.double().train()
    data = image_set(tiny_dataset, "train.csv", config)
    batch = next(data.batches(8, shuffle=True, generator=torch.Generator().manual_seed(0)))
    batch.images = batch.images.double()
    return task_net, meta, batch


def test_the_exact_meta_gradient_matches_finite_differences(meta_problem):
    task_net, meta, batch = meta_problem
    lr, wd, w = 0.05, 5e-4, 0.3
    scope = "network"
    grads, _ = meta_gradients(task_net, meta, batch, PseudoStep(lr, wd), w, 2.0, second_order=True, scope=scope)
    phi = [p for p in meta.parameters() if p.requires_grad]
    assert sum(float(g.abs().sum()) for g in grads) > 1e-6  # non-trivial first
    rng = torch.Generator().manual_seed(1)
    for _ in range(3):
        direction = [torch.randn(p.shape, generator=rng, dtype=p.dtype) for p in phi]
        norm = torch.sqrt(sum((d * d).sum() for d in direction))
        direction = [d / norm for d in direction]  # a unit step: small enough to cross no ReLU kink
        analytic = sum(float((g * d).sum()) for g, d in zip(grads, direction))
        h = 1e-4
        with torch.no_grad():
            for p, d in zip(phi, direction):
                p.add_(h * d)
        plus = float(meta_objective(task_net, meta, batch, lr, wd, w, scope).detach())
        with torch.no_grad():
            for p, d in zip(phi, direction):
                p.sub_(2 * h * d)
        minus = float(meta_objective(task_net, meta, batch, lr, wd, w, scope).detach())
        with torch.no_grad():
            for p, d in zip(phi, direction):
                p.add_(h * d)
        numeric = (plus - minus) / (2 * h)
        assert abs(numeric) > 1e-8
        assert analytic == pytest.approx(numeric, rel=1e-2), (analytic, numeric)


@pytest.mark.parametrize("scope", ["network", "top", "heads"])
def test_every_scope_is_the_gradient_of_its_objective_written_from_scratch(meta_problem, scope):
    """The pseudo step's scopes (held input, functional heads, the split at φ's logits) against
    autograd through `meta_objective` above, which the finite-difference test checks in turn."""
    task_net, meta, batch = meta_problem
    phi = [p for p in meta.parameters() if p.requires_grad]
    grads, _ = meta_gradients(task_net, meta, batch, PseudoStep(0.05, 5e-4), 0.3, 2.0, second_order=True, scope=scope)
    expected = torch.autograd.grad(meta_objective(task_net, meta, batch, 0.05, 5e-4, 0.3, scope), phi,
                                   allow_unused=True)
    a = torch.cat([g.flatten() for g in grads])
    b = torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for p, g in zip(phi, expected)])
    assert float(b.norm()) > 1e-6
    assert float((a - b).norm() / b.norm()) < 1e-10
    if scope != "network":  # and the scope does change the gradient: it is not the whole network's
        whole, _ = meta_gradients(task_net, meta, batch, PseudoStep(0.05, 5e-4), 0.0, 2.0, scope="network")
        part, _ = meta_gradients(task_net, meta, batch, PseudoStep(0.05, 5e-4), 0.0, 2.0, scope=scope)
        assert not torch.allclose(torch.cat([g.flatten() for g in whole]), torch.cat([g.flatten() for g in part]))


def test_first_order_points_where_second_order_does(meta_problem):
    task_net, meta, batch = meta_problem
    exact, _ = meta_gradients(task_net, meta, batch, PseudoStep(0.05, 5e-4), 0.3, 2.0, second_order=True)
    approx, _ = meta_gradients(task_net, meta, batch, PseudoStep(0.05, 5e-4), 0.3, 2.0, second_order=False)
    a, b = torch.cat([g.flatten() for g in exact]), torch.cat([g.flatten() for g in approx])
    assert float(a @ b / (a.norm() * b.norm())) >= 0.9


# ---- (4) functional_call in train mode ---------------------------------------------------------------

def test_functional_call_in_train_mode_equals_the_module_and_leaves_its_buffers(tiny_dataset):
    torch.manual_seed(0)
    config = tiny_config("mkcnet")
    task_net, _ = build_networks(config.model)
    task_net.train()
    x = torch.randn(6, 1, 32, 32)
    before = {n: b.clone() for n, b in task_net.named_buffers()}
    cloned = {n: b.clone() for n, b in task_net.named_buffers()}
    out = functional_call(task_net, (dict(task_net.named_parameters()), cloned), (x,))
    for name, value in task_net.named_buffers():
        assert torch.equal(value, before[name]), f"functional_call moved {name}"
    assert any(not torch.equal(cloned[n], before[n]) for n in cloned if "running_mean" in n)  # BN did update
    reference = task_net(x)  # the module itself, in train mode (batch statistics)
    for head in ("diagnosis", "quality", "auxiliary"):
        torch.testing.assert_close(out.logits(head), reference.logits(head), rtol=0, atol=0)


# ---- (6) a split of size ≡ 1 (mod batch), and (2) exact resume, for every method ---------------------

def run_config(method: str, epochs: int, lr: float | None = None):
    config = tiny_config(method)  # batch 8, Stage II on every batch
    config.train.epochs = epochs
    config.train.step_size = 4
    config.train.grad_probe = False
    if lr is not None:
        config.train.lr = config.train.meta_lr = lr
    return config


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_trains_on_a_split_of_size_one_past_a_batch(method, tiny_dataset, tmp_path):
    config = run_config(method, 1)
    train = image_set(tiny_dataset, "train.csv", config, n=9)  # 9 = 8 + 1
    result = Trainer(config, tmp_path / method, progress=False, verbose=False).fit(train)
    assert result.best_epoch == 1


# MKCNet (the method whose resume has the most state: φ, its optimiser, the meta step) in every
# run; the other methods with -m slow.
@pytest.mark.parametrize("method", [m if m == "mkcnet" else pytest.param(m, marks=pytest.mark.slow) for m in METHODS])
def test_resume_is_bit_identical_to_an_uninterrupted_run(method, tiny_dataset, tmp_path):
    config = run_config(method, 2)
    train = image_set(tiny_dataset, "train.csv", config)
    Trainer(config, tmp_path / "straight", progress=False, verbose=False).fit(train)
    first = run_config(method, 1)
    Trainer(first, tmp_path / "resumed", progress=False, verbose=False).fit(train)
    Trainer(run_config(method, 2), tmp_path / "resumed", progress=False, verbose=False).fit(train, resume=True)
    straight, resumed = (load_file(str(tmp_path / d / "state.safetensors")) for d in ("straight", "resumed"))
    initial = build_networks(config.model)[0].state_dict()
    assert set(straight) == set(resumed)
    moved = [k for k, v in initial.items() if v.is_floating_point() and not torch.equal(straight[f"task.{k}"], v)]
    assert len(moved) > len(initial) // 2  # the weights did train
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), f"{method}: {key} differs after resume"


def test_a_damaged_state_is_one_line_and_temporaries_go(tiny_dataset, tmp_path):
    config = run_config("vanilla", 1)
    train = image_set(tiny_dataset, "train.csv", config)
    run = tmp_path / "run"
    Trainer(config, run, progress=False, verbose=False).fit(train)
    (run / ".state.safetensors.tmp999").write_bytes(b"\0" * 1000)  # a kill during a write
    (run / "state.safetensors").write_bytes((run / "state.safetensors").read_bytes()[:500])  # truncated
    with pytest.raises(UserError, match="state.safetensors .* is damaged"):
        Trainer(run_config("vanilla", 2), run, progress=False, verbose=False).fit(train, resume=True)
    assert not list(run.glob(".*.tmp*"))


def test_a_torn_history_line_is_skipped_on_resume_and_a_damaged_config_is_one_line(tiny_dataset, tmp_path):
    train = image_set(tiny_dataset, "train.csv", run_config("vanilla", 1))
    run = tmp_path / "run"
    Trainer(run_config("vanilla", 1), run, progress=False, verbose=False).fit(train)
    with open(run / "history.jsonl", "a") as f:
        f.write('{"epoch": 2, "loss.to')  # a kill during the append of epoch 2's row
    with pytest.warns(UserWarning, match="history.jsonl, line 2: not a complete record"):
        Trainer(run_config("vanilla", 2), run, progress=False, verbose=False).fit(train, resume=True)
    rows = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and "loss.total" in rows[1]
    assert list(pd.read_csv(run / "history.csv")["epoch"]) == [1, 2]
    (run / "config.json").write_text("")  # damaged by something else: one line, not a traceback
    with pytest.raises(UserError, match="config.json in .* cannot be read"):
        Trainer(run_config("vanilla", 3), run, progress=False, verbose=False).fit(train, resume=True)


@pytest.mark.parametrize("name, word", [("augment", "flip"), ("select", "AUC"), ("meta_scope", "all"),
                                        ("meta_optimizer", "Adam"), ("meta_step", "first"),
                                        ("meta_outer_schedule", "lrr")])
def test_a_misspelt_word_setting_in_a_config_is_one_line_before_anything_runs(name, word, tmp_path):
    config = run_config("mkcnet", 1)
    setattr(config.train, name, word)  # as a hand-edited config.json carries it
    with pytest.raises(UserError, match=f"^unknown {name} '{word}'; choose from "):
        Trainer(config, tmp_path / "run", progress=False, verbose=False)
    assert not (tmp_path / "run").exists()


# ---- (7) the paper preset, end to end at tiny scale ----------------------------------------------------

@pytest.mark.slow
def test_the_paper_preset_runs_end_to_end_at_tiny_scale(tmp_path, capsys):
    from mkcnet.cli import main

    root = write_dataset(tmp_path / "data", n_per_cell=4)
    lines = (root / "train.csv").read_text().splitlines()
    (root / "train.csv").write_text("\n".join(lines[:10]) + "\n")  # the header and 9 images of 3 cells
    assert len((root / "train.csv").read_text().splitlines()) - 1 == 9  # 9 ≡ 1 (mod 4)
    code = main(["train", "--dataset", "ct-iqad", "--root", str(root), "--preset", "paper", "--method", "mkcnet",
                 "--image-size", "64", "--batch-size", "4", "--epochs", "1", "--meta-every", "1",
                 "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 0, capsys.readouterr().err
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["model"]["backbone"] == "vgg16_bn" and config["train"]["momentum"] == 0.0
    meta = {k: v for k, v in load_file(str(tmp_path / "run" / "state.safetensors")).items() if k.startswith("meta.")}
    assert sum(v.numel() for v in meta.values()) < 20e6  # VGG16-BN features + 512→512→Σψ, as the official one


def test_a_backbone_override_works_with_every_preset():
    from mkcnet.presets import TRAINING, build_run_config

    for preset in TRAINING:
        config = build_run_config("ct-iqad", preset, "vanilla", backbone="resnet18", image_size=32)
        assert config.model.backbone_args == {} and config.model.output_stride is None
        task_net, _ = build_networks(config.model)
        assert task_net(torch.zeros(2, 1, 32, 32)).diagnosis.shape == (2, 2)


# ---- (5) models that learn -----------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("method", ["vanilla", "mkcnet"])
def test_models_learn_the_tiny_task(method, tmp_path):
    """Diagnosis is a blob on the left or right: four epochs reach validation AUC ≥ 0.9 (measured:
    1.0 for both; an untrained or broken model ranks at chance, ~0.5)."""
    root = write_dataset(tmp_path / "data", n_per_cell=13, seed=3)
    header, *rows = (root / "train.csv").read_text().splitlines()
    (root / "val.csv").write_text("\n".join([header] + rows[::3]) + "\n")  # 16 held out, every cell
    (root / "train.csv").write_text("\n".join([header] + [r for i, r in enumerate(rows) if i % 3]) + "\n")
    config = run_config(method, 4, lr=0.03)
    config.train.augment = "none"  # a horizontal flip would move the blob to the other label's side
    train, val = image_set(root, "train.csv", config), image_set(root, "val.csv", config)
    result = Trainer(config, tmp_path / "run", progress=False, verbose=False).fit(train, val)
    assert result.best_metrics["diagnosis.auc"] >= 0.9, result.best_metrics
