"""Image-quality degradation simulator: modality-specific families with severities 1-5.

    from mkcnet.degradation import degrade, replay, list_families
    bad, record = degrade(pil_image, "fundus.blur", severity=3, seed=0)
    assert replay(pil_image, record) == bad   # bit-identical

Families are registered on import by the modality modules below.
"""

from mkcnet.degradation import fundus, oct, radiology  # noqa: F401  (registers the families)
from mkcnet.degradation.api import (
    apply_record_float01,
    degrade,
    get_family,
    list_families,
    make_record,
    replay,
    severity_table,
)
from mkcnet.degradation.base import MODALITIES, SEVERITIES, Family, from_float01, to_float01
from mkcnet.degradation.fov import Fov, estimate_fov

__all__ = [
    "MODALITIES", "SEVERITIES", "Family", "Fov", "apply_record_float01", "degrade", "estimate_fov",
    "from_float01", "get_family", "list_families", "make_record", "replay", "severity_table", "to_float01",
]
