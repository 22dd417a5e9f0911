"""The Task Net's feature branches, named once: their feature key, their labels and what their
maps mean. CAMs, embeddings, readings and predict rows all read this table.

Example:
    >>> BRANCHES["auxiliary"].label
    'auxiliary ω'
    >>> FEATURE_NAMES
    ('diagnosis', 'quality', 'auxiliary', 'fused')
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Branch:
    key: str  # the feature's key in TaskOutput.features, results packs and predict rows
    label: str  # short, for choices and figure titles
    cam_label: str  # the title of its CAM
    meaning: str  # what its map shows, for the reading
    plain: str = ""  # the same for a clinician (the plain view); "" : the map is not shown there


_ALL = (
    Branch("diagnosis", "diagnosis", "diagnosis branch", "the regions whose features raise the predicted diagnosis.",
           "where the image most supports the finding."),
    Branch("quality", "quality", "quality branch",
           "the regions behind the quality verdict (noise, blur, artefacts, exposure).",
           "where the image quality was judged (noise, blur, artefacts, exposure)."),
    Branch("auxiliary", "auxiliary ω", "auxiliary ω branch",
           "what drives the meta-learned ω class, a sub-class of one (diagnosis, quality) pair; this feature "
           "feeds the diagnosis through the Meta-knowledge Assistance Block."),
    Branch("fused", "fused diagnosis", "fused diagnosis",
           "the shared backbone's map for the diagnosis head, which reads the diagnosis and the ω features together.",
           "where the image most supports the final diagnosis."),
)
BRANCHES: dict[str, Branch] = {b.key: b for b in _ALL}
FEATURE_NAMES: tuple[str, ...] = tuple(BRANCHES)

# A model without the assistance block explains its diagnosis on the backbone's map alone.
SHARED_BACKBONE = Branch("fused", "shared backbone", "shared backbone",
                         "the backbone's map for the diagnosis head (this model has no fused feature).",
                         "where the image most supports the diagnosis.")
