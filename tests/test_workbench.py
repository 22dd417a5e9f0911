"""The workbench's bundles, packs, context, pages and packaging (no server; tiny models)."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import mkcnet.workbench  # noqa: F401  (offline environment, as the app sets it)
from mkcnet.checkpoint import save_checkpoint
from mkcnet.errors import UserError
from mkcnet.models import build_networks
from tests.conftest import tiny_config

gr = pytest.importorskip("gradio")

from mkcnet.project import project_path  # noqa: E402
from mkcnet.workbench.context import Workbench  # noqa: E402
from mkcnet.workbench.examples import data_root_from  # noqa: E402
from mkcnet.workbench.packs import regenerate_synthetic  # noqa: E402
from mkcnet.workbench.zoo import ModelZoo  # noqa: E402

ASSETS = project_path("assets")

REPO = Path(__file__).resolve().parents[1]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def zoo_dir(tiny_dataset, tmp_path_factory) -> Path:
    """Two untrained tiny CT models, bundled by scripts/bundle_models.py as the real ones are."""
    bundle_models = load_script("bundle_models")
    runs, out = tmp_path_factory.mktemp("runs"), tmp_path_factory.mktemp("checkpoints")
    for method in ("mkcnet", "vanilla"):
        config = tiny_config(method)
        config.data.root = str(tiny_dataset)
        torch.manual_seed(0)
        task_net, _ = build_networks(config.model)
        save_checkpoint(runs / method / "best", task_net, None, config, {"epoch": 1})
        bundle_models.bundle(runs / method, f"tiny-{method}", out, embeddings=("tsne",), repeats=5)
    return out


@pytest.fixture(scope="module")
def context(zoo_dir) -> Workbench:
    return Workbench(ModelZoo([zoo_dir]), assets=ASSETS, data_root="")


# ---- bundling, packs and the context --------------------------------------------------------------

def test_bundle_holds_fp16_task_net_card_and_pack(zoo_dir):
    from safetensors import safe_open

    bundle = zoo_dir / "tiny-mkcnet"
    with safe_open(str(bundle / "model.safetensors"), "pt") as f:
        keys = [k for k in f.keys() if not k.startswith("guard.")]  # the out-of-distribution reference: fp32
        assert all(k.startswith("task.") for k in keys)
        assert {f.get_tensor(k).dtype for k in keys if f.get_tensor(k).is_floating_point()} == {torch.float16}
    assert {p.name for p in bundle.iterdir()} == {"model.safetensors", "config.json", "README.md", "results"}
    card = (bundle / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: mkcnet" in card  # hub metadata over the Markdown
    assert "Validation metrics" in card and "mkcnet train" in card and "not a medical device" in card
    assert "ECE raw → calibrated" in card and "Out-of-distribution guard" in card and "Reliability (diagnosis" in card
    info = json.loads((bundle / "config.json").read_text())["info"]
    assert info["modality"] == "ct" and "diagnosis.auc" in info["metrics"]
    for name in ("predictions.csv", "features.npz", "pack.json", "embeddings.npz", "ood.csv"):
        assert (bundle / "results" / name).is_file(), name
    assert not list(bundle.rglob("*.png"))  # paths only, never images


def test_a_flagged_reading_strikes_out_the_diagnosis_box_by_its_verdict_not_its_words(context):
    """The guard's verdict reaches the page as data (a State, read by the event after each reading
    to set the diagnosis box's class); no page script looks for the reading's words."""
    from mkcnet.workbench.reading import OUT_OF_DISTRIBUTION, Reading
    from mkcnet.workbench.ui import OUT_OF_DISTRIBUTION_CLASS, PanelView, PredictionPanel, _restyle_diagnosis

    assert OUT_OF_DISTRIBUTION not in (ASSETS / "workbench_head.html").read_text()
    flagged = type("Verdict", (), {"ood": True})()
    for verdict, expected in ((flagged, True), (None, False)):
        reading = Reading({"a": 1.0}, None, "text", 0, None, None, verdict=verdict)
        view = PanelView(reading, reading.diagnosis, "no quality head", reading.text, [])
        assert PredictionPanel.values(view, with_cams=False)[3] is expected
        assert (OUT_OF_DISTRIBUTION_CLASS in _restyle_diagnosis(expected)["elem_classes"]) is expected


def test_refresh_refits_the_guard_and_rewrites_the_card(zoo_dir, tmp_path):
    """`bundle_models.py --refresh`: from the bundle alone (no run), the guard, pack and card come back."""
    import shutil

    from mkcnet.checkpoint import load_checkpoint, read_header

    bundle_models = load_script("bundle_models")
    out = tmp_path / "checkpoints"
    shutil.copytree(zoo_dir / "tiny-vanilla", out / "tiny-vanilla")
    before = load_checkpoint(out / "tiny-vanilla")
    (out / "tiny-vanilla" / "README.md").unlink()
    shutil.rmtree(out / "tiny-vanilla" / "results")
    assert bundle_models.main(["--refresh", "tiny-vanilla", "--out", str(out)]) == 0
    after = load_checkpoint(out / "tiny-vanilla")
    assert after.guard.threshold == pytest.approx(before.guard.threshold)  # same weights, same data
    assert after.calibration.temperatures == pytest.approx(before.calibration.temperatures)
    assert read_header(out / "tiny-vanilla" / "model.safetensors")["info"]["title"] == before.info["title"]
    assert "Reliability (diagnosis" in (out / "tiny-vanilla" / "README.md").read_text()
    assert (out / "tiny-vanilla" / "results" / "predictions.csv").is_file()
    with pytest.raises(SystemExit):
        bundle_models.main(["--refresh", "no-such-model", "--out", str(out)])


def test_convert_brings_an_older_bundle_to_the_hub_layout(zoo_dir, tmp_path):
    """`bundle_models.py --convert`: a bundle of the older layout (model.json, MODEL.md) loads and
    shows its card as it is, and converts to config.json (the same bytes) and README.md (hub
    metadata over the same Markdown) with its weights untouched; converting again changes nothing."""
    import shutil

    import mkcnet
    from mkcnet.checkpoint import load_checkpoint
    from mkcnet.hub import strip_front_matter

    bundle_models = load_script("bundle_models")
    out = tmp_path / "checkpoints"
    folder = out / "tiny-mkcnet"
    shutil.copytree(zoo_dir / "tiny-mkcnet", folder)
    body = strip_front_matter((folder / "README.md").read_text())
    (folder / "config.json").rename(folder / "model.json")
    (folder / "README.md").unlink()
    (folder / "MODEL.md").write_text(body)
    weights, side = (folder / "model.safetensors").read_bytes(), (folder / "model.json").read_bytes()
    assert load_checkpoint(folder).info["title"] and ModelZoo([out]).entry("tiny-mkcnet").card_markdown() == body
    assert mkcnet.load(folder).name == "tiny-mkcnet"  # the older layout still loads (not through from_pretrained)

    assert bundle_models.main(["--convert", "tiny-mkcnet", "--out", str(out)]) == 0
    assert {p.name for p in folder.iterdir()} == {"model.safetensors", "config.json", "README.md", "results"}
    assert (folder / "model.safetensors").read_bytes() == weights and (folder / "config.json").read_bytes() == side
    card = (folder / "README.md").read_text()
    assert card.startswith("---\n") and strip_front_matter(card) == body
    assert ModelZoo([out]).entry("tiny-mkcnet").card_markdown() == body
    assert bundle_models.main(["--convert", "tiny-mkcnet", "--out", str(out)]) == 0
    assert (folder / "README.md").read_text() == card  # idempotent


def test_bundled_embeddings_are_used_as_stored(context, zoo_dir):
    stored = np.load(zoo_dir / "tiny-mkcnet" / "results" / "embeddings.npz")["tsne/diagnosis"]
    table = context.packs.embedding("tiny-mkcnet", "diagnosis", "tsne")
    np.testing.assert_array_equal(table[["x", "y"]].to_numpy(), stored)
    assert {"image", "diagnosis", "quality", "joint", "correct", "pred_diagnosis"} <= set(table.columns)
    assert len(context.packs.embedding("tiny-mkcnet", "quality", "pca")) == 4  # not bundled: computed


def test_ood_curves_come_from_the_bundle(context, zoo_dir):
    curves = context.packs.ood_curves("tiny-vanilla")
    stored = pd.read_csv(zoo_dir / "tiny-vanilla" / "results" / "ood.csv")
    pd.testing.assert_frame_equal(curves, stored)
    assert set(curves["metric"]) == {"auc", "acc", "f1"}


def test_pack_images_come_from_the_data_folder_or_the_pack_root(context, tiny_dataset, tmp_path):
    assert context.packs.image("tiny-mkcnet", 0).shape[2] == 1  # the pack's own root (the tiny set)
    moved = Workbench(context.zoo, data_root="")
    moved.packs.entries["tiny-mkcnet"].pack = None
    with pytest.raises(UserError, match="data folder not found"):
        moved.packs.image("tiny-mkcnet", 0, data_root_from(str(tmp_path / "nowhere")))
    assert moved.packs.image("tiny-mkcnet", 0, data_root_from(str(tiny_dataset))) is not None


def test_synthetic_images_are_regenerated_bit_for_bit(tmp_path):
    from mkcnet.synth import synth_sample

    pd.DataFrame([{"image": "images/a.png", "seed": 42, "size": 64, "diagnosis": 2, "quality": 1}]).to_csv(
        tmp_path / "synth.csv", index=False)
    expected, _ = synth_sample(42, 64, 2, 1)
    np.testing.assert_array_equal(regenerate_synthetic(tmp_path / "synth.csv", "images/a.png"), expected)
    assert regenerate_synthetic(tmp_path / "synth.csv", "images/other.png") is None


def test_live_evaluation_adds_a_pack(context, tiny_dataset):
    key = context.packs.evaluate("tiny-vanilla", tiny_dataset)
    assert key in dict((k, v) for v, k in context.packs.choices())
    assert len(context.packs.entry(key).pack.predictions) == 4
    with pytest.raises(UserError, match="no split file"):
        data_root_from(str(tiny_dataset / "Images"))


def test_live_evaluation_and_embedding_report_their_steps(context, tiny_dataset, tmp_path, monkeypatch):
    """What the workbench's progress bars show: each step of a live evaluation (decoding image by
    image, the network batch by batch, the metrics), the share growing from 0 to under 1; and an
    embedding computed (not stored) says so before it starts."""
    monkeypatch.setenv("MKCNET_CACHE", str(tmp_path))  # an empty cache: the images are decoded
    steps = []
    key = context.packs.evaluate("tiny-mkcnet", tiny_dataset, report=lambda share, what: steps.append((share, what)))
    shares, names = [s for s, _ in steps], list(dict.fromkeys(w for _, w in steps))
    assert names == ["reading the split val.csv", "decoding 4 images", "running the network on 4 images",
                     "metrics and calibration"]
    assert shares == sorted(shares) and shares[0] == 0 and shares[-1] < 1
    assert sum(w == "decoding 4 images" for _, w in steps) == 1 + 4  # as it starts, then once per image
    said = []
    table = context.packs.embedding(key, "quality", "pca", report=lambda share, what: said.append(what))
    assert said == ["PCA of 4 images' quality features"] and len(table) == 4
    context.packs.embedding(key, "quality", "pca", report=lambda share, what: said.append(what))
    assert len(said) == 1  # kept: nothing computed, nothing to say


def test_a_handler_with_progress_works_through_wire():
    """A handler declaring `progress=PROGRESS` is wired like any other: gradio fills in the event's
    gr.Progress through the boundary (which keeps the signature, gr.Request too), the steps reach
    the client while the handler runs, and the outputs and status line are as ever."""
    import time

    gradio_client = pytest.importorskip("gradio_client")
    from mkcnet.workbench.hosting import free_port
    from mkcnet.workbench.ui import PROGRESS, progress_report, status_box, wire

    got = {}

    def slow(text: str, request: gr.Request, progress=PROGRESS):
        got["request"] = request
        report = progress_report(progress)
        for k in range(3):
            report(k / 3, f"step {k + 1} of 3")
            time.sleep(0.4)
        return text.upper()

    with gr.Blocks() as demo:
        box, out = gr.Textbox(), gr.Textbox()
        wire(box.submit, slow, box, [out, status_box()], api_name="slow")
    port = free_port()
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        job = gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False).submit("abc", api_name="/slow")
        seen = set()
        while not job.done():
            seen |= {unit.desc for unit in job.status().progress_data or []}
            time.sleep(0.05)
        assert job.result() == ("ABC", "") and isinstance(got["request"], gr.Request)
        assert seen and seen <= {"step 1 of 3", "step 2 of 3", "step 3 of 3"}, seen
    finally:
        demo.close()


def test_a_wrong_data_folder_does_not_stop_the_app(zoo_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MKCNET_DATA", str(tmp_path / "missing"))
    context = Workbench(ModelZoo([zoo_dir]))
    assert context.default_data == "" and context.examples("ct")[0].modality == "ct"


def test_user_data_examples_cover_every_label_cell(context, tiny_dataset):
    examples = context.examples(data_root=tiny_dataset, limit=4)
    cells = {tuple(int(v) for v in re.findall(r"(?:diagnosis|quality) (\d)", e.caption)) for e in examples}
    assert cells == {(0, 0), (0, 1), (1, 0), (1, 1)}


def test_a_data_sets_examples_are_captioned_in_the_models_class_names(context, tiny_dataset, tmp_path):
    """A data set's images in a page's gallery: their labels in the page's model's class names
    (the labels first: a gallery shows a caption's start), numbers where the model has no name."""
    import dataclasses
    import shutil

    from mkcnet.workbench.examples import LabelNames
    from mkcnet.workbench.ui import refresh_examples

    def labels(captions) -> set[str]:
        return {caption.rsplit(" · ", 1)[0] for caption in captions}

    entry = context.zoo.entry("tiny-mkcnet")
    assert entry.label_names == LabelNames(("non-COVID", "COVID-19"), ("LQ", "HQ"))
    with_data = Workbench(context.zoo, assets=ASSETS, data_root=tiny_dataset)
    gallery, _ = refresh_examples(with_data, entry, None)  # what Diagnose and Compare show
    assert labels(c for _, c in gallery) == {"non-COVID · LQ", "non-COVID · HQ", "COVID-19 · LQ", "COVID-19 · HQ"}
    assert all(c.endswith(" (copy).png") for _, c in gallery)
    # Another task's label (a diagnosis 7 the model has no name for): its number.
    other = shutil.copytree(tiny_dataset, tmp_path / "other")
    (other / "val.csv").write_text((other / "val.csv").read_text().replace(",1,1\n", ",7,1\n"))
    shown = with_data.examples(data_root=other, names=entry.label_names)
    assert labels(e.caption for e in shown) == {"non-COVID · LQ", "non-COVID · HQ", "COVID-19 · LQ", "diagnosis 7 · HQ"}
    # A model whose names are not one per class names none: numbers throughout.
    unnamed = LabelNames.of(dataclasses.replace(entry.model_config, diagnosis_names=("only one",), quality_names=()))
    shown = with_data.examples(data_root=tiny_dataset, names=unnamed)
    assert labels(e.caption for e in shown) == {f"diagnosis {d} · quality {q}" for d in (0, 1) for q in (0, 1)}


# ---- bundled assets and packaging -------------------------------------------------------------------

def test_examples_are_listed_readable_and_small():
    from mkcnet.data.images import read_image
    from mkcnet.degradation import MODALITIES

    index = json.loads((ASSETS / "examples" / "examples.json").read_text())
    assert {e["modality"] for e in index} == {"fundus", "ct"}
    for e in index:
        assert e["modality"] in MODALITIES and read_image(ASSETS / "examples" / e["file"]).ndim == 3
    assert sum(p.stat().st_size for p in (ASSETS / "examples").iterdir()) < 1_000_000
    suffixes = {Path(e["file"]).suffix for e in index}
    assert {".png", ".jpg", ".dcm", ".tif"} <= suffixes  # the readers' formats, shown


def test_requirements_cover_the_package_and_its_app_extra():
    """Spaces installs requirements.txt only (the repo is not installed), so it must list
    everything pyproject's dependencies and the app extra need, with the same bounds (an
    exact version pin instead must satisfy them)."""
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    needed = [Requirement(spec) for spec in project["dependencies"] + project["optional-dependencies"]["app"]]
    listed = {r.name.lower(): r for r in (Requirement(line.split("#")[0]) for line in
                                          (REPO / "requirements.txt").read_text().splitlines()
                                          if line.strip() and not line.startswith(("#", "-")))}
    for requirement in needed:
        assert requirement.name.lower() in listed, f"requirements.txt lacks {requirement.name}"
        found = listed[requirement.name.lower()]
        pinned = [s.version for s in found.specifier if s.operator == "=="]
        if pinned:
            assert requirement.specifier.contains(pinned[0]), (requirement, found)
        else:
            assert found.specifier == requirement.specifier, (requirement, found)


def test_cli_registers_the_app_command(capsys):
    from mkcnet.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["app", "--help"])
    assert exit_info.value.code == 0 and "--port" in capsys.readouterr().out


# ---- pages ------------------------------------------------------------------------------------------

def api_names(blocks) -> set[str]:
    return {d.get("api_name") for d in blocks.config["dependencies"] if d.get("api_name")}


@pytest.mark.parametrize("page", ["diagnose", "embeddings", "ood", "compare"])
def test_each_page_builds_on_its_own(context, page):
    import pages

    module = getattr(pages, page)
    blocks = module.build(context)
    assert isinstance(blocks, gr.Blocks)
    expected = {"diagnose": {"predict", "cam"}, "embeddings": {"embedding", "embedding_point"},
                "ood": {"ood"}, "compare": {"compare"}}[page]
    assert expected <= api_names(blocks)


def test_the_home_page_opens_with_an_analysis(zoo_dir):
    """Diagnose is built with its first example already through the default model; its maps
    come from the page's load event (grad-cam stays off the start-up path)."""
    from pages import diagnose

    context = Workbench(ModelZoo([zoo_dir]), data_root="")
    blocks = diagnose.build(context)
    components = {b.label: b for b in blocks.blocks.values() if isinstance(b, gr.components.Component)}
    assert components["Diagnosis"].value["label"] in {"non-COVID", "COVID-19"}
    reading = next(b.value for b in blocks.blocks.values() if isinstance(b, gr.Markdown)
                   and "Reading the maps" in str(b.value))
    # The tiny test model has seen only blobs: its guard flags the bundled example, and says so.
    assert "Image quality" in reading or "does not look like the model's training data" in reading
    gallery = components["Class activation maps per branch"]._id
    loads = [d for d in blocks.config["dependencies"]
             if any(t[1] == "load" for t in d["targets"]) and gallery in d["outputs"]]
    assert loads, "no load event fills in the opening example's maps"
    assert context.zoo.loaded() == [context.zoo.names()[0]]  # and the model is warm


def test_app_routes_one_page_per_module(context):
    from app import build_app

    demo = build_app(context)
    assert [p[:2] for p in demo.pages] == [("", "Home"), ("embeddings", "Embeddings"),
                                           ("ood", "Out-of-distribution"), ("compare", "Compare")]
    assert {"predict", "cam", "embedding", "embedding_point", "ood", "compare"} <= api_names(demo)


def test_a_typed_run_joins_only_that_session_and_only_inside_the_roots(zoo_dir):
    from mkcnet.workbench.hosting import Hosting
    from mkcnet.workbench.ui import add_typed_run

    context = Workbench(ModelZoo([zoo_dir]), data_root="", hosting=Hosting(hosted=False, data_roots=(zoo_dir,)))
    visitor = type("Request", (), {"session_hash": "a"})()
    session, key = add_typed_run(context, str(zoo_dir / "tiny-mkcnet"), visitor)
    assert key in dict((k, v) for v, k in session.packs.choices()) and str(zoo_dir) not in key
    assert key not in dict((k, v) for v, k in context.session(type("Request", (), {"session_hash": "b"})()).packs.choices())
    with pytest.raises(UserError, match="outside the folders"):
        add_typed_run(context, "/etc", visitor)
    context.hosting = Hosting(hosted=True)
    with pytest.raises(UserError, match="hosted"):
        add_typed_run(context, str(zoo_dir / "tiny-mkcnet"), visitor)


def test_every_page_with_examples_offers_the_remembered_data_folder(context):
    """Diagnose and Compare both read the visitor's data folder, restored from the browser on load
    (beside the visitor key every page keeps)."""
    from pages import compare, diagnose

    for page in (diagnose, compare):
        blocks = page.build(context)
        labels = [getattr(b, "label", None) for b in blocks.blocks.values()]
        assert "…or a data folder on this machine" in labels, page.__name__
        stores = [b for b in blocks.blocks.values() if isinstance(b, gr.BrowserState)]
        assert sorted(s.storage_key for s in stores) == ["mkcnet-data-folder", "mkcnet-visitor"], page.__name__


def test_ready_is_said_when_the_page_answers():
    """`app.first_answer` waits through refusals and errors for the first good page (the app prints
    "ready" after it), and gives up past its timeout."""
    import http.server
    import threading

    import httpx

    from app import first_answer

    answers = iter([503, 503, 200])
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(next(answers))
            self.send_response(seen[-1])
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        first_answer(f"http://127.0.0.1:{server.server_port}/", timeout=10)
        assert seen == [503, 503, 200]
    finally:
        server.shutdown()
    with pytest.raises(httpx.HTTPError):
        first_answer(f"http://127.0.0.1:{server.server_port}/", timeout=0.5)  # nobody answers any more
