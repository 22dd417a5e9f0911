"""The layout of the design card: the top level the README's folder table names, no import
cycle inside mkcnet/, and a command line that starts without torch or gradio."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mkcnet.errors import UserError
from mkcnet.project import find_project_home, project_path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "mkcnet"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """mkcnet module → the mkcnet modules it imports, at any depth of its code (a lazy import
    inside a function still ties the two modules together)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
            else:
                continue
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_import_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    assert "mkcnet.errors" in graph["mkcnet.cli"]
    assert "mkcnet.analysis.cam" in graph["mkcnet.analysis.cli"]  # imported inside run_cam


def test_no_import_cycle_in_the_package():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle)


# The package's layers, lowest first: a module may import its own layer and the ones below, never
# one above (docs/architecture.md draws them). The longest matching prefix places a module.
LAYERS = (
    ("mkcnet", "mkcnet.errors", "mkcnet.project", "mkcnet.files", "mkcnet.run_lock", "mkcnet.config", "mkcnet.methods",
     "mkcnet.device", "mkcnet.branches"),
    ("mkcnet.presets", "mkcnet.metrics", "mkcnet.losses", "mkcnet.data", "mkcnet.trust", "mkcnet.degradation",
     "mkcnet.synth", "mkcnet.hub"),
    ("mkcnet.models",),
    ("mkcnet.checkpoint",),
    ("mkcnet.training", "mkcnet.inference", "mkcnet.export"),
    ("mkcnet.analysis",),
    ("mkcnet.api",),
    ("mkcnet.workbench",),
    ("mkcnet.cli", "mkcnet.__main__"),
)


def layer_of(module: str) -> int | None:
    matches = [(len(prefix), i) for i, layer in enumerate(LAYERS) for prefix in layer
               if module == prefix or module.startswith(prefix + ".")]
    return max(matches)[1] if matches else None


# The one import that points up on purpose: the package root re-exports the Python API
# (`mkcnet.load`) lazily, through PEP 562's module __getattr__, so `import mkcnet` stays light.
FRONT_DOOR = {("mkcnet", "mkcnet.api")}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})" for a, targets in sorted(graph.items())
            for b in sorted(targets) if layer_of(b) > layer_of(a) and (a, b) not in FRONT_DOOR]


def test_every_module_has_a_layer_and_no_import_points_up():
    graph = import_graph()
    assert [m for m in graph if layer_of(m) is None] == []
    assert upward_imports(graph) == []


def test_an_upward_import_is_found():
    graph = {"mkcnet.checkpoint": {"mkcnet.inference.evaluate"}, "mkcnet.inference.evaluate": {"mkcnet.checkpoint"}}
    assert upward_imports(graph) == ["mkcnet.checkpoint (layer 3) imports mkcnet.inference.evaluate (layer 4)"]


# The libraries whose internals the code could reach into, and their public modules. Anything
# else is named below, with why, where its version is pinned and what test would catch a change.
PUBLIC = {
    "gradio": {"gradio"},
    "timm": {"timm", "timm.layers", "timm.models", "timm.data"},
    "pytorch_grad_cam": {"pytorch_grad_cam", "pytorch_grad_cam.utils.model_targets", "pytorch_grad_cam.utils.image"},
}
PRIVATE_EXCEPTIONS = {
    ("mkcnet/models/attention.py", "timm.layers.cbam"):
        "CBAM's channel and spatial attention, not exported by timm.layers; timm <1.1; tests/test_models.py",
    ("mkcnet/analysis/cam.py", "pytorch_grad_cam.activations_and_gradients"):
        "one recorder per tap, one forward for every branch; grad-cam <1.6; tests/test_cam.py",
    ("mkcnet/analysis/cam.py", "pytorch_grad_cam.base_cam"):
        "the CAM methods' base class (get_cam_image); grad-cam <1.6; tests/test_cam.py",
    ("mkcnet/workbench/sessions.py", "gradio.utils"):
        "the folder of Gradio's uploads and copies (get_upload_folder), emptied of a visitor's files as they "
        "leave; gradio <7; tests/test_hostile_client.py::test_nothing_of_a_visitor_outlives_their_session",
    ("mkcnet/workbench/sessions.py", "gradio.processing_utils"):
        "where Gradio keeps its copy of a returned file (hash_file names the folder); gradio <7; the same test",
}


def library_imports() -> list[tuple[str, str, str]]:
    """(file, module, name) for every import of gradio, timm or pytorch_grad_cam in the shipped code."""
    found = []
    for path in [*PACKAGE.rglob("*.py"), *(REPO / "pages").glob("*.py"), REPO / "app.py"]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            pairs = []
            if isinstance(node, ast.Import):
                pairs = [(alias.name, "") for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                pairs = [(node.module, alias.name) for alias in node.names]
            found += [(str(path.relative_to(REPO)), module, name) for module, name in pairs
                      if module.split(".")[0] in PUBLIC]
    return found


def private_imports(imports: list[tuple[str, str, str]]) -> list[str]:
    return [f"{file}: {module}{'.' + name if name else ''}" for file, module, name in imports
            if (module not in PUBLIC[module.split(".")[0]] or name.startswith("_"))
            and (file, module) not in PRIVATE_EXCEPTIONS]


def test_no_private_module_of_gradio_timm_or_grad_cam_outside_the_named_exceptions():
    imports = library_imports()
    assert len(imports) > 10  # the scan sees the imports, lazy ones included
    assert private_imports(imports) == []
    used = {(file, module) for file, module, _ in imports}
    assert [e for e in PRIVATE_EXCEPTIONS if e not in used] == []  # no stale exception
    assert private_imports([("pages/x.py", "timm.layers.activations", "HardSigmoid"),
                            ("pages/x.py", "gradio", "_private")]) == [
        "pages/x.py: timm.layers.activations.HardSigmoid", "pages/x.py: gradio._private"]


def test_the_command_line_starts_without_torch_or_gradio():
    code = ("import sys\nfrom mkcnet.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'gradio', 'timm', 'sklearn'}), "
            "file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert "train" in result.stdout and "cam" in result.stdout
    assert result.stderr.strip() == "[]", result.stderr


def test_app_help_starts_without_torch_or_gradio():
    code = ("import runpy, sys\nsys.argv = ['app.py', '--help']\ntry:\n    runpy.run_path('app.py', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'gradio'}), file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert "--port" in result.stdout and result.stderr.strip() == "[]", result.stderr


def test_the_readme_folder_table_matches_the_tree():
    """The first column of the README's folder table names every tracked top-level entry, and
    every path it names exists."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## What is in the box"):]
    section = section[:section.index("\n## ", 5)]
    first_cells = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    named = [name for cell in first_cells for name in re.findall(r"`([^`]+)`", cell)]
    assert named, "no folder table under 'What is in the box'"
    for name in named:
        assert (REPO / name).exists(), f"the README's folder table names {name}, which does not exist"
    tracked = subprocess.run(["git", "ls-files"], capture_output=True, text=True, cwd=REPO).stdout.split()
    top = {t.split("/")[0] for t in tracked if not t.startswith(".")}
    listed = {name.rstrip("/") for name in named if "/" not in name.rstrip("/")}
    assert top <= listed, f"top-level entries missing from the README's folder table: {sorted(top - listed)}"


def test_the_project_home_is_the_clone_or_mkcnet_home(tmp_path, monkeypatch):
    monkeypatch.delenv("MKCNET_HOME", raising=False)
    assert find_project_home() == REPO and project_path("checkpoints") == REPO / "checkpoints"
    copy = tmp_path / "home"
    (copy / "checkpoints").mkdir(parents=True)
    (copy / "app.py").write_text("")
    monkeypatch.setenv("MKCNET_HOME", str(copy))
    assert project_path("assets") == copy.resolve() / "assets"
    monkeypatch.setenv("MKCNET_HOME", str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="MKCNET_HOME is not a project folder"):
        find_project_home()


def test_mkcnet_app_runs_the_projects_app_py(tmp_path, monkeypatch):
    """`mkcnet app` serves whatever app.py the project home holds (here a stand-in)."""
    from mkcnet.cli import main

    home = tmp_path / "home"
    (home / "assets").mkdir(parents=True)
    (home / "app.py").write_text("def serve(args):\n    print('served on', args.port)\n")
    result = subprocess.run([sys.executable, "-m", "mkcnet", "app", "--port", "7999"], capture_output=True, text=True,
                            cwd=tmp_path, env={**os.environ, "MKCNET_HOME": str(home)})
    assert result.returncode == 0 and "served on 7999" in result.stdout, result.stderr
    monkeypatch.setenv("MKCNET_HOME", str(tmp_path))
    assert main(["app"]) == 2  # a folder without app.py: one line, no traceback


# ---- the workbench's pages: they lay out and wire; every handler runs through ui.wire ---------------

def test_every_event_of_every_page_runs_through_the_wiring_helper(tmp_path):
    pytest.importorskip("gradio")
    from app import build_app
    from mkcnet.workbench.context import Workbench
    from mkcnet.workbench.zoo import ModelZoo

    demo = build_app(Workbench(ModelZoo([tmp_path]), data_root=""))
    assert len(demo.fns) > 20
    unwired = [f"{f.name} ({getattr(f.fn, '__module__', '?')})" for f in demo.fns.values()
               if not getattr(f.fn, "wired", False)]
    assert not unwired, f"events wired around ui.wire (no error boundary, no output count): {unwired}"


def test_no_event_runs_twice_for_one_value(tmp_path):
    """A component's change already follows its submit or input: an event on both runs its
    handler twice for one value (an error then shows two toasts)."""
    pytest.importorskip("gradio")
    from app import build_app
    from mkcnet.workbench.context import Workbench
    from mkcnet.workbench.zoo import ModelZoo

    demo = build_app(Workbench(ModelZoo([tmp_path]), data_root=""))
    twice = []
    for dependency in demo.config["dependencies"]:
        events: dict[int, set[str]] = {}
        for block, event in dependency["targets"]:
            events.setdefault(block, set()).add(event)
        twice += [(demo.fns[dependency["id"]].name, sorted(e)) for e in events.values()
                  if "change" in e and e & {"submit", "input"}]
    assert not twice, f"handlers run twice for one value: {twice}"


def test_a_handler_returning_the_wrong_number_of_outputs_fails_naming_it():
    gr = pytest.importorskip("gradio")
    from mkcnet.workbench.ui import WiringError, boundary, status_box

    with gr.Blocks():
        image, table, note, status_line = gr.Image(), gr.Dataframe(), gr.Markdown(), status_box()

    def three_outputs_but_two_values():
        return None, "only two"

    with pytest.raises(WiringError, match="three_outputs_but_two_values returned 2 values for its 3 outputs"):
        boundary(three_outputs_but_two_values, [image, table, note, status_line])()
    # Fitted: the status line is added by the wiring, "" when all is well...
    assert boundary(lambda: (1, 2, 3), [image, table, note, status_line])() == (1, 2, 3, "")
    assert boundary(lambda: "x", note)() == "x"

    # ...and a user's mistake keeps the other outputs (skipped) and says one line.
    def refuses():
        raise UserError("no such example /srv/secret/x.png")

    *kept, line = boundary(refuses, [image, table, status_line])()
    assert [k.get("__type__") for k in kept] == ["update", "update"] and all(len(k) == 1 for k in kept)
    assert line == "⚠️ no such example x.png"


def test_a_handler_whose_type_hints_do_not_resolve_is_refused_when_wired():
    """gradio injects gr.Request by type hint; one unresolvable hint would silently stop that."""
    gr = pytest.importorskip("gradio")
    from mkcnet.workbench.ui import WiringError, boundary

    def handler(value: NotImportedHere, request: gr.Request):  # noqa: F821
        return value

    with pytest.raises(WiringError, match="handler: a type hint does not resolve"):
        boundary(handler, None)


def test_only_the_settings_module_reads_the_workbench_environment():
    """The workbench's settings are read once (mkcnet/workbench/settings.py) and passed down."""
    readers = []
    for path in [*(PACKAGE / "workbench").glob("*.py"), *(REPO / "pages").glob("*.py"), REPO / "app.py"]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            reads = (isinstance(node, ast.Attribute) and node.attr in {"environ", "getenv"}
                     and isinstance(node.value, ast.Name) and node.value.id == "os")
            # mkcnet/workbench/__init__.py only writes the offline variables, before gradio loads.
            if reads and path.name not in {"settings.py", "__init__.py"}:
                readers.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert readers == []


def test_workbench_settings_come_from_the_command_line_then_the_environment():
    from mkcnet.workbench.settings import WorkbenchSettings

    env = {"GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": "8001", "MKCNET_DATA": "ct",
           "MKCNET_CHECKPOINTS": os.pathsep.join(["a", "b"]), "MKCNET_DATA_ROOTS": "/data", "SPACE_ID": "x/y",
           "MKCNET_BENCH": "runs/bench"}
    read = WorkbenchSettings.read(env)
    assert (read.host, read.port, read.data, read.on_space) == ("0.0.0.0", 8001, "ct", True)
    assert read.checkpoints == (Path("a"), Path("b")) and read.data_roots == (Path("/data"),)
    assert read.bench == Path("runs/bench")
    given = WorkbenchSettings.read(env, host="127.0.0.1", port=9000, data="", checkpoints="c", hosted=True)
    assert (given.host, given.port, given.data, given.checkpoints, given.hosted) == ("127.0.0.1", 9000, "", (Path("c"),),
                                                                                       True)
    assert WorkbenchSettings.read({}) == WorkbenchSettings()
    with pytest.raises(UserError, match="GRADIO_SERVER_PORT is 'eighty'"):
        WorkbenchSettings.read({"GRADIO_SERVER_PORT": "eighty"})


@pytest.mark.parametrize("module", ["mkcnet.config", "mkcnet.files", "mkcnet.inference.inputs", "mkcnet.workbench.settings",
                                    "mkcnet.workbench.ui", "mkcnet.workbench.context", "mkcnet.workbench.sessions",
                                    "mkcnet.workbench.examples"])
def test_the_docstring_examples_run(module):
    import doctest
    import importlib

    if module.startswith("mkcnet.workbench.") and module != "mkcnet.workbench.settings":
        pytest.importorskip("gradio")
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0


# One InputSpec: what a network reads (channels, size, mean, std, window) travels as one value. Every loader,
# resizer and normalisation takes it; none takes the fields one by one (a new field would then have to be
# threaded through every call site, and one forgotten site would read images differently).
SPEC_TAKERS = ("mkcnet.data.images:load_resized", "mkcnet.data.images:fit_to_model", "mkcnet.data.images:model_window",
               "mkcnet.data.dataset:decode_images", "mkcnet.data.dataset:normalise", "mkcnet.data.dataset:ImageSet.load",
               "mkcnet.data.dataset:ImageSet.__init__", "mkcnet.workbench.imaging:prepare")
INPUT_FIELDS = {"channels", "size", "mean", "std", "window", "in_chans", "image_size"}
# The fields passed side by side in a call: `mc.in_chans, mc.image_size` or `c.mean, c.std`.
FIELD_BY_FIELD = re.compile(r"\bin_chans\s*,\s*[\w.]*\bimage_size\b|\bmean\s*,\s*[\w.]+\.std\b")


def field_by_field_calls() -> list[str]:
    """file:line for every place in the tracked Python that passes the input's fields side by side (the
    InputSpec property, which builds the spec from them, and this file's examples excepted)."""
    tracked = subprocess.run(["git", "ls-files", "*.py"], capture_output=True, text=True, cwd=REPO, check=True).stdout
    excepted = ("mkcnet/config.py", "tests/test_layout.py")
    return [f"{name}:{number}: {line.strip()}" for name in tracked.split() if name not in excepted
            for number, line in enumerate((REPO / name).read_text(encoding="utf-8").splitlines(), start=1)
            if FIELD_BY_FIELD.search(line)]


@pytest.mark.parametrize("name", SPEC_TAKERS)
def test_every_loader_and_resizer_takes_one_input_spec(name):
    import importlib
    import inspect

    from mkcnet.config import InputSpec

    module, _, qualname = name.partition(":")
    target = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    parameters = inspect.signature(target, eval_str=True).parameters
    assert [p for p in parameters.values() if p.annotation is InputSpec], f"{name} takes no InputSpec parameter"
    assert not INPUT_FIELDS & set(parameters), f"{name} takes the input field by field: {sorted(INPUT_FIELDS & set(parameters))}"


def test_no_call_passes_the_input_field_by_field():
    assert field_by_field_calls() == []
    assert FIELD_BY_FIELD.search("ImageSet.load(table, mc.in_chans, mc.image_size, mc.mean, mc.std)")
    assert FIELD_BY_FIELD.search("normalise(x, config.model.mean, config.model.std)")
    assert not FIELD_BY_FIELD.search("build_run_config(mean=args.mean, std=args.std)")


def test_a_bundled_models_input_spec_is_its_stored_fields_and_the_loaders_follow_it(tmp_path):
    """The spec is the checkpoint's JSON fields (which stay as they are), and a split loaded with it comes
    out at its channels and size, normalised as (x/255 − mean)/std by hand."""
    import dataclasses
    import json

    import numpy as np
    from PIL import Image

    from mkcnet.config import RunConfig
    from mkcnet.data.dataset import ImageSet, SplitTable
    from mkcnet.data.images import load_resized

    grey = np.random.default_rng(0).integers(0, 256, (6, 6), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "a.png")
    table = SplitTable(tmp_path, ["a.png"], np.zeros(1, int), np.zeros(1, int))
    files = sorted((REPO / "checkpoints").glob("*/config.json"))
    channels_seen = set()
    for file in files:
        raw = json.loads(file.read_text())["config"]
        stored = raw["model"]
        config = RunConfig.from_dict(raw)
        spec = config.model.input
        assert (spec.channels, spec.size, list(spec.mean), list(spec.std), spec.window and list(spec.window)) == (
            stored["in_chans"], stored["image_size"], stored["mean"], stored["std"], stored["window"]), file
        written = json.loads(json.dumps(config.to_dict()))["model"]
        assert "input" not in written and {k: written[k] for k in ("in_chans", "image_size", "mean", "std", "window")} \
            == {k: stored[k] for k in ("in_chans", "image_size", "mean", "std", "window")}, file

        assert load_resized(tmp_path / "a.png", spec).shape == (spec.channels, spec.size, spec.size)
        small = dataclasses.replace(spec, size=6)  # the image's own size: the resize leaves the pixels as they are
        images = next(ImageSet.load(table, small, progress=False, cache=False).batches(1)).images
        mean, std = np.array(spec.mean)[:, None, None], np.array(spec.std)[:, None, None]
        by_hand = (np.repeat(grey[None], spec.channels, axis=0) / 255 - mean) / std
        assert images.shape == (1, spec.channels, 6, 6)
        np.testing.assert_allclose(images[0].numpy(), by_hand, rtol=0, atol=1e-5, err_msg=str(file))
        channels_seen.add(spec.channels)
    assert len(files) >= 2 and channels_seen == {1, 3}  # the grey CT models and the colour fundus ones
