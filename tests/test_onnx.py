"""ONNX export: the graph and its metadata, parity with torch, and `mkcnet predict --runtime
onnxruntime` in a process without torch, timm or scikit-learn."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

import mkcnet  # noqa: E402
from mkcnet.cli import main  # noqa: E402
from mkcnet.export import export_onnx  # noqa: E402
from mkcnet.inference.onnx_runtime import OnnxModel  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "assets" / "examples"
# Eight images: six the fundus model knows (synthetic fundus), a photograph, and a grey CT phantom
# (flagged out of distribution).
IMAGES = [*sorted(EXAMPLES.glob("synth_*.png")), EXAMPLES / "retina.jpg", EXAMPLES / "phantom_gaussian_noise3.png"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[mkcnet.Model, Path]:
    model = mkcnet.load("synth-fundus-mkcnet")
    path = export_onnx(model.loaded, tmp_path_factory.mktemp("onnx") / "model.onnx")
    assert not model.loaded.task_net.training  # exporting leaves the caller's network as it was
    return model, path


def test_the_graph_has_every_head_the_guard_feature_and_the_trust_data(exported):
    model, path = exported
    graph = onnx.load(str(path))
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert [o.name for o in graph.graph.output] == ["diagnosis", "quality", "auxiliary", "feature"]
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"  # dynamic batch
    meta = {p.key: p.value for p in graph.metadata_props}
    header, spec = json.loads(meta["mkcnet"]), json.loads(meta["mkcnet.input"])
    assert header["calibration"]["temperatures"] == pytest.approx(model.loaded.calibration.temperatures)
    assert header["guard"]["threshold"] == pytest.approx(model.loaded.guard.threshold)
    assert header["config"]["model"]["diagnosis_names"] == list(model.diagnosis_names)
    assert spec["mean"] == pytest.approx(list(model.config.mean)) and spec["size"] == model.config.image_size
    assert "window" in spec
    runtime = OnnxModel(path)
    np.testing.assert_array_equal(runtime.trust.guard.precision, model.loaded.guard.precision.astype(np.float32))


def test_onnxruntime_matches_torch_on_eight_images(exported):
    model, path = exported
    runtime = OnnxModel(path)
    assert len(IMAGES) == 8
    a, b = model.predict(IMAGES), runtime.predict(IMAGES, batch_size=3)  # batches of 3, 3 and 2: dynamic batch
    worst = 0.0
    for x, y in zip(a, b):
        for field in ("diagnosis_probabilities", "diagnosis_raw", "quality_probabilities", "quality_raw"):
            p, q = getattr(x, field), getattr(y, field)
            assert p.keys() == q.keys()
            worst = max(worst, *(abs(p[k] - q[k]) for k in p))
        assert (x.diagnosis, x.quality, x.ood, x.ood_reason != "") == (y.diagnosis, y.quality, y.ood, y.ood_reason != "")
        assert x.ood_score == pytest.approx(y.ood_score, rel=1e-3)
    assert worst <= 1e-4, f"largest probability difference {worst:.2e}"
    assert any(x.ood for x in a) and not all(x.ood for x in a)  # both verdicts were compared


def test_predict_with_onnxruntime_imports_neither_torch_timm_nor_sklearn(exported, tmp_path):
    _, path = exported
    code = ("import sys\nfrom mkcnet.cli import main\n"
            f"code = main(['predict', {str(path)!r}, {str(IMAGES[0])!r}, {str(tmp_path / 'nope.png')!r}, "
            "'--runtime', 'onnxruntime', '--format', 'json'])\n"
            "print(code, sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'timm', 'sklearn', 'pandas'}), "
            "file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.stderr.strip().splitlines()[-1] == "2 []", result.stderr  # exit 2: an input is missing
    code = code.replace(f", {str(tmp_path / 'nope.png')!r}", "")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.stderr.strip() == "0 []", result.stderr
    rows = json.loads(result.stdout)
    assert rows[0]["diagnosis"] in ("NoDR", "NPDR", "PDR") and rows[0]["calibrated"] is True
    assert isinstance(rows[0]["ood"], bool) and rows[0]["error"] == ""


def test_the_export_command_and_a_missing_onnx_file(tmp_path, capsys):
    assert main(["predict", str(REPO / "checkpoints" / "ct-iqad-mkcnet"), str(IMAGES[0]), "--runtime",
                 "onnxruntime"]) == 2
    assert "run `mkcnet export" in capsys.readouterr().err
    assert main(["export", str(REPO / "checkpoints" / "ct-iqad-mkcnet"), "--opset", "16",
                 "--out", str(tmp_path / "x.onnx")]) == 2
    assert "opset 16 is too old" in capsys.readouterr().err
