"""How far the cheap Stage II steps point where the exact one does, on real batches.

For a run's saved state (Task Net θ, Meta Learner φ and θ's momentum buffers, as `--resume`
reads them), on N training batches: ∇φ of the exact second-order step over the whole network
("network"), of the second-order step over the branches and heads on held backbone features
("heads"), of the same over the last backbone stage too ("top"), of the official first-order
finite-difference step through θ̃ and of the first-order step around θ (the `cpu` preset's,
"aligned"); the cosine of each with the exact one, for the outer term alone (w = 0: what the
pseudo step changes) and for the whole objective (with the run's outer weight).

    python scripts/meta_gradient_cosine.py runs/ct/mkcnet --data ../shared/data/ct-iqad --batches 8

Needs the run's data set (CT-IQAD is in ../shared/data on the project's machines).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch.func import functional_call

from mkcnet.checkpoint import load_into
from mkcnet.config import RunConfig
from mkcnet.data.dataset import ImageSet, read_split
from mkcnet.models import build_networks
from mkcnet.training.meta_step import PseudoStep, aligned_meta_gradients, meta_gradients
from mkcnet.training.objective import task_losses


def flat(grads: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.flatten() for g in grads])


def cosine(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    a, b = flat(a), flat(b)
    return float(a @ b / (a.norm() * b.norm() + 1e-30))


def aligned(task_net, meta, batch, tc, entropy_weight: float) -> list[torch.Tensor]:
    """The `cpu` preset's step: first order around θ, from one forward of the Task Net, its cloned
    BatchNorm buffers leaving the module as it was."""
    buffers = {n: b.clone() for n, b in task_net.named_buffers()}
    out = functional_call(task_net, (dict(task_net.named_parameters()), buffers), (batch.images,))
    primary = task_losses(out, batch, None, tc.focal_gamma, task_net.config.meta_length).primary
    result, _ = aligned_meta_gradients(task_net, meta, batch, meta(batch.images), primary,
                                       out.auxiliary.detach(), tc.lr, entropy_weight, tc.focal_gamma,
                                       outer_weight=tc.meta_outer_weight)
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a run folder with config.json and state.safetensors")
    p.add_argument("--data", type=Path, required=True, help="the data-set root")
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if not (args.data / "train.csv").is_file():
        print(f"no train.csv in {args.data}: this script needs the run's data set", file=sys.stderr)
        return 1
    config = RunConfig.load(args.run / "config.json")
    mc, tc = config.model, config.train
    task_net, meta = build_networks(mc)
    state = load_file(str(args.run / "state.safetensors"))
    load_into(task_net, state, "task", args.run / "state.safetensors")
    load_into(meta, state, "meta", args.run / "state.safetensors")
    task_net.train(), meta.train()
    optimizer = torch.optim.SGD(task_net.parameters(), lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay)
    for i, param in enumerate(task_net.parameters()):
        for key in (f"optim.task.{i}.momentum_buffer", f"optim.task.{i}"):
            if key in state:
                optimizer.state[param]["momentum_buffer"] = state[key]
    step = PseudoStep.of(optimizer, task_net)
    table = read_split(args.data / config.data.train_split, args.data, config.data.diagnosis_map, mc.num_diagnosis,
                       mc.num_quality, quality_map=config.data.quality_map)
    data = ImageSet.load(table, mc.input, progress=False)
    batches = data.batches(tc.batch_size, shuffle=True, generator=torch.Generator().manual_seed(args.seed))
    rows: dict[str, list[float]] = {}
    for _, batch in zip(range(args.batches), batches):
        for weight, tag in ((0.0, "outer"), (tc.entropy_weight, "whole")):
            kw = {"outer_weight": tc.meta_outer_weight}  # the run's weight of the outer term against w·R
            exact, _ = meta_gradients(task_net, meta, batch, step, weight, tc.focal_gamma, True, "network", **kw)
            for scope in ("top", "heads"):
                cheap, _ = meta_gradients(task_net, meta, batch, step, weight, tc.focal_gamma, True, scope, **kw)
                rows.setdefault(f"{scope} vs exact ({tag})", []).append(cosine(cheap, exact))
            first, _ = meta_gradients(task_net, meta, batch, step, weight, tc.focal_gamma, False, "network", **kw)
            rows.setdefault(f"aligned vs exact ({tag})", []).append(cosine(aligned(task_net, meta, batch, tc, weight),
                                                                            exact))
            rows.setdefault(f"first order vs exact ({tag})", []).append(cosine(first, exact))
    print(f"{args.run}: {args.batches} training batches of {tc.batch_size}, cosine of ∇φ with the exact step's")
    for name, values in rows.items():
        print(f"  {name:32} median {statistics.median(values):+.3f}   min {min(values):+.3f}   max {max(values):+.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
