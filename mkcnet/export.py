"""`mkcnet export CHECKPOINT --format onnx`: the Task Net as an ONNX graph that keeps its trust data.

The graph takes the normalised N×C×S×S float input (dynamic batch) and outputs every head's
logits ("diagnosis", "quality", "auxiliary" where the method has them) and the guard's feature
("feature", the shared backbone's pooled map unless the guard says otherwise). Everything
else a prediction needs travels in the model's metadata (`metadata_props`), so an ONNX file
alone gives the same assessment as the checkpoint (`mkcnet.inference.onnx_runtime`):

    mkcnet          the checkpoint's JSON header: config (class names, normalisation, input size),
                    info, calibration (temperatures), guard (threshold, input ranges), prediction sets
    mkcnet.input    how to make the input: channels, size, mean, std, resize, window
    mkcnet.guard    the guard's tensors (class means and precision, or reference features) as
                    {"name": {"shape": [...], "float32_base64": "..."}}
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mkcnet.checkpoint import LoadedModel, load_checkpoint, read_header
from mkcnet.errors import UserError
from mkcnet.models import TaskNet

OPSET = 18  # ≥ 17 (LayerNormalization and friends); 18 is what torch's exporter writes natively
HEAD_ORDER = ("diagnosis", "quality", "auxiliary")
INPUT = "image"
FEATURE = "feature"
# DICOM and NIfTI windows (modality LUT, then the window) are applied when the image is decoded,
# before the resize: the graph starts from the decoded uint8 image; "window" in the metadata is the
# model's default [centre, width] (null: the file's own window, else its range).
WINDOW_NOTE = ("modality LUT then window at decoding (mkcnet.data.images.read_image): the asked window, else "
               "`window`, else the file's own, else the volume's range; none for plain images")


class ExportedHeads(nn.Module):
    """The Task Net with a tuple output: each head's logits, then the guard's feature."""

    def __init__(self, task_net: TaskNet, heads: tuple[str, ...], feature: str):
        super().__init__()
        self.task_net, self.heads, self.feature = task_net, heads, feature

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.task_net(x)
        return (*(out.logits(h) for h in self.heads), out.features[self.feature])


def encode_array(array: np.ndarray) -> dict:
    a = np.ascontiguousarray(array, dtype=np.float32)
    return {"shape": list(a.shape), "float32_base64": base64.b64encode(a.tobytes()).decode("ascii")}


def decode_array(raw: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(raw["float32_base64"]), np.float32).reshape(raw["shape"])


def export_onnx(checkpoint: str | Path | LoadedModel, out: str | Path, opset: int = OPSET) -> Path:
    """Write the checkpoint as ONNX (dynamic batch) with its trust data in the metadata.

    Args:
        checkpoint: a run directory, model folder or .safetensors file, or a loaded model.
        out: the .onnx file to write.
        opset: the ONNX opset (≥ 17).

    Returns:
        The written path.

    Example:
        >>> from mkcnet.export import export_onnx
        >>> export_onnx("checkpoints/ct-iqad-mkcnet", "/tmp/ct.onnx")  # doctest: +SKIP
        PosixPath('/tmp/ct.onnx')
    """
    import onnx

    if opset < 17:
        raise UserError(f"opset {opset} is too old: use 17 or later")
    model = checkpoint if isinstance(checkpoint, LoadedModel) else load_checkpoint(checkpoint)
    header = read_header(model.path) if model.path is not None else {}
    task_net = model.task_net.float().eval().cpu()
    heads = tuple(h for h in HEAD_ORDER if h in task_net.heads)
    feature = model.guard.feature if model.guard is not None else "backbone"
    spec = model.config.model.input
    example = torch.zeros(2, spec.channels, spec.size, spec.size)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    names = [*heads, FEATURE]
    # The TorchScript exporter: the dynamo one needs onnxscript and traces no better for this net.
    # .eval() on the wrapper too: the exporter puts the module back in its own mode afterwards, and a
    # fresh wrapper's is training, which would leave the caller's network in training mode.
    torch.onnx.export(ExportedHeads(task_net, heads, feature).eval(), (example,), str(out), input_names=[INPUT],
                      output_names=names, opset_version=opset, dynamo=False,
                      dynamic_axes={n: {0: "batch"} for n in [INPUT, *names]})
    graph = onnx.load(str(out))
    header = {k: v for k, v in header.items()} or {"config": model.config.to_dict(), "info": model.info}
    if model.calibration is not None:
        header["calibration"] = model.calibration.to_dict()
    if model.guard is not None:
        header["guard"] = model.guard.to_header()
    # The InputSpec's fields under their own names: the onnxruntime path builds its InputSpec from them.
    described = {"name": INPUT, "channels": spec.channels, "size": spec.size, "mean": list(spec.mean),
                 "std": list(spec.std), "resize": "bilinear (Pillow, reducing_gap=2.0) to size×size",
                 "layout": "NCHW float32, (x/255 - mean)/std", "window": list(spec.window) if spec.window else None,
                 "window_note": WINDOW_NOTE, "outputs": names, "feature": feature}
    meta = {"mkcnet": json.dumps(header, default=float), "mkcnet.input": json.dumps(described)}
    if model.guard is not None:
        meta["mkcnet.guard"] = json.dumps({k: encode_array(v) for k, v in model.guard.tensors().items()})
    del graph.metadata_props[:]
    for key, value in meta.items():
        graph.metadata_props.add(key=key, value=value)
    graph.producer_name = "mkcnet"
    onnx.checker.check_model(graph)
    onnx.save(graph, str(out))
    return out


__all__ = ["OPSET", "decode_array", "encode_array", "export_onnx"]
