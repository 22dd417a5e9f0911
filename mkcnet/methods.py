"""Methods: MKCNet, its first-order variant and the baselines, as switches on one Task Net.

A new baseline or ablation is one more `Method` entry (plus, for a genuinely different
architecture, a small module in `mkcnet.models`), never a copy of the model or the trainer.
Free of torch, so every command can list the methods without loading it.
"""

from __future__ import annotations

from dataclasses import dataclass

from mkcnet.config import RunConfig


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    quality: bool = True  # quality head and loss
    # The auxiliary task's targets: "meta" = the Meta Learner φ (trained in Stage II), "random" =
    # fixed seeded labels (RandomLabels), None = no auxiliary branch, head or loss.
    aux_labels: str | None = "meta"
    second_order: bool = True  # when Stage II goes through the pseudo step θ̃
    meta_step: str | None = None  # Stage II's form: None = the preset's; "pseudo" = through θ̃ whatever the preset
    meta_outer: bool = True  # Stage II's objective includes L_d + L_q at θ̃ (False: the regulariser alone, a control)
    mask: str = "joint"
    attention: bool = True  # Global Attention Blocks
    assistance: bool = True  # Meta-knowledge Assistance Block (diagnosis head reads the ω feature)
    architecture: str = "task_net"  # a key of mkcnet.models.ARCHITECTURES
    mixup: float = 0.0  # Stage I mixup of images and targets with λ ~ Beta(α, α); 0 = off
    stands_for: str | None = None  # the method this variant answers for where one is asked by name (the workbench)

    @property
    def auxiliary(self) -> bool:
        return self.aux_labels is not None

    @property
    def meta_learner(self) -> bool:
        return self.aux_labels == "meta"

    @property
    def mask_uses_quality(self) -> bool:
        """Whether the auxiliary labels' mask needs every training image's quality label."""
        return self.auxiliary and self.mask in ("joint", "quality")


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("vanilla", "diagnosis only, the official VanillaNet: backbone → global pooling → MLP", quality=False,
               aux_labels=None, attention=False, assistance=False, architecture="vanilla_net"),
        Method("vanilla-gab", "diagnosis only: backbone + a Global Attention Block branch and head (this project's "
               "vanilla before the official one)", quality=False, aux_labels=None, stands_for="vanilla"),
        Method("mixup", "vanilla trained with Mixup (α = 0.2), a domain-generalisation augmentation baseline",
               quality=False, aux_labels=None, mixup=0.2),
        Method("multitask", "diagnosis + quality heads on a shared backbone, no meta learner", aux_labels=None),
        Method("canet", "CANet: diagnosis and quality branches exchange features by cross-task attention",
               aux_labels=None, architecture="canet"),
        Method("detach", "DETACH: separate diagnosis and quality backbones exchanging detached features",
               aux_labels=None, architecture="detach"),
        Method("maxl", "MAXL: meta auxiliary labels masked by diagnosis only; no quality head, no MAB",
               quality=False, mask="diagnosis", assistance=False),
        Method("mkcnet", "MKCNet; Stage II as the preset sets it (paper: exact second order through θ̃; cpu: "
               "first order around θ)"),
        Method("mkcnet-fo", "MKCNet, the official first-order (finite-difference) meta step through θ̃",
               second_order=False, meta_step="pseudo"),
        # Ablations of MKCNet (second order), one part removed or replaced each.
        Method("mkcnet-no-gab", "MKCNet without the Global Attention Blocks (branches pool the map)",
               attention=False),
        Method("mkcnet-no-mab", "MKCNet without the Meta-knowledge Assistance Block (the diagnosis head "
               "reads the diagnosis feature only)", assistance=False),
        Method("mkcnet-reg-only", "control: MKCNet whose Stage II keeps only the entropy regulariser (no "
               "L_d + L_q at θ̃): what φ's labels become without the meta objective", meta_outer=False),
        Method("mkcnet-no-meta", "MKCNet without the Meta Learner: fixed random soft labels per image, "
               "JEM-masked", aux_labels="random"),
        Method("mkcnet-mask-diagnosis", "MKCNet with auxiliary labels masked by diagnosis only", mask="diagnosis"),
        Method("mkcnet-mask-quality", "MKCNet with auxiliary labels masked by quality only", mask="quality"),
        Method("mkcnet-mask-none", "MKCNet with unmasked auxiliary labels", mask="none"),
    )
}

# The paper's Table 2 comparison: single-task, domain generalisation, multi-task / auxiliary learning, ours.
TABLE2 = ("vanilla", "mixup", "multitask", "canet", "detach", "maxl", "mkcnet")


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}") from None


def apply_method(config: RunConfig) -> RunConfig:
    """Set the model switches and the meta-step order that `config.model.method` implies."""
    method = get_method(config.model.method)
    m = config.model
    m.use_quality, m.use_auxiliary = method.quality, method.auxiliary
    m.use_attention, m.use_assistance, m.mask = method.attention, method.assistance, method.mask
    config.train.second_order = method.second_order
    if method.meta_step is not None:
        config.train.meta_step = method.meta_step
    config.train.meta_outer = method.meta_outer
    return config

