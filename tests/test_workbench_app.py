"""The launched workbench with the bundled models: its API through gradio_client, bad uploads,
and every page in a real browser (Debian's chromium driven by Playwright).

One app serves the whole module. Screenshots go to $MKCNET_SCREENSHOTS when set
(MKCNET_SCREENSHOTS=docs/screenshots refreshes the docs), else to a temporary folder.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pytest
from PIL import Image

import mkcnet.workbench  # noqa: F401  (offline environment, as the app sets it)

gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

from app import build_app, launch_options  # noqa: E402
from mkcnet.analysis.cam import DEFAULT_METHOD, cam_targets  # noqa: E402
from mkcnet.analysis.referral import trust_scores  # noqa: E402
from mkcnet.project import project_path  # noqa: E402
from mkcnet.workbench.context import Workbench  # noqa: E402
from mkcnet.workbench.hosting import free_port  # noqa: E402
from mkcnet.workbench.imaging import load_for  # noqa: E402
from mkcnet.workbench.reading import analyse  # noqa: E402
from mkcnet.workbench.zoo import ModelZoo  # noqa: E402
from tests.bad_images import BAD_FILES  # noqa: E402
from tests.conftest import write_dataset  # noqa: E402
from tests.drawn_xray import drawn_chest_xray  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
ASSETS = project_path("assets")
EXAMPLE = ASSETS / "examples" / "synth_PDR_reject.png"
CT_EXAMPLE = ASSETS / "examples" / "phantom_ct.dcm"


@pytest.fixture(scope="module")
def app():
    context = Workbench(ModelZoo(), data_root="")
    if not context.zoo.names("synth-fundus", "mkcnet"):
        pytest.fail("the bundled models are missing from checkpoints/ (scripts/bundle_models.py --standard)")
    demo = build_app(context)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                **launch_options(context))
    yield context, f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture(scope="module")
def client(app):
    return gradio_client.Client(app[1], verbose=False)


def model(context: Workbench, dataset: str = "synth-fundus", method: str = "mkcnet") -> str:
    return context.zoo.names(dataset, method)[0]


# ---- API ------------------------------------------------------------------------------------------

def test_api_predict(app, client):
    context, _ = app
    preview, diagnosis, quality, reading, what_if, status = client.predict(
        gradio_client.handle_file(str(EXAMPLE)), model(context), "none", 0, 0, api_name="/predict")
    assert status == "" and what_if == ""  # an upload (even of an example's bytes) has no label to show
    assert {c["label"] for c in diagnosis["confidences"]} == {"NoDR", "NPDR", "PDR"}
    assert {c["label"] for c in quality["confidences"]} == {"reject", "usable", "good"}
    assert "Image quality" in reading and Path(preview).is_file()


def test_a_picked_example_shows_its_true_label(app, tmp_path):
    import shutil

    from mkcnet.workbench.imaging import load_for
    from mkcnet.workbench.reading import read_out
    from mkcnet.workbench.ui import example_gallery, picked
    from pages.diagnose import true_label_text

    context, _ = app
    session = context.session(None)
    _, shown = example_gallery(context, context.examples("fundus"), session)
    index = next(i for i, path in enumerate(shown) if Path(path).name == EXAMPLE.name)
    example = context.examples("fundus")[index]
    # What the gallery hands the page when it is picked, then Gradio's own copy of it (another folder).
    staged = context.stage(example.path, session)
    file = shutil.copy(staged, (tmp_path / "gradio-copy").mkdir() or tmp_path / "gradio-copy")
    assert context.example_of(file, session, "fundus") is None  # nothing picked: an upload of the same bytes
    session.picked = picked(shown, index)  # what the gallery's select handler does
    assert context.example_of(staged, session, "fundus") == example == context.example_of(file, session, "fundus")
    assert context.example_of("x.png", session, "fundus") is None
    other = tmp_path / "other" / EXAMPLE.name  # the picked file's name, other bytes: the visitor uploaded over it
    other.parent.mkdir()
    other.write_bytes(Path(staged).read_bytes()[:-1])
    assert context.example_of(str(other), session, "fundus") is None
    zoo_model = context.zoo.model(model(context))
    reading = read_out(zoo_model, load_for(zoo_model, file, context.images))
    text = true_label_text(zoo_model, example, reading)
    said = zoo_model.class_names("diagnosis")[reading.top_diagnosis]
    assert text.startswith("**Labelled** PDR, quality reject in its data set; the model ")
    assert ("agrees" in text) == (said == "PDR")


def test_api_predict_what_if(app, client):
    context, _ = app
    *_, what_if, status = client.predict(gradio_client.handle_file(str(EXAMPLE)), model(context), "fundus.blur",
                                         4, 1, api_name="/predict")
    assert status == "" and what_if.startswith("**What-if fundus.blur · severity 4**")


def test_api_batch_gives_one_row_per_file_errors_included(app, client, tmp_path):
    context, _ = app
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    files = [gradio_client.handle_file(str(f)) for f in (EXAMPLE, CT_EXAMPLE, broken)]
    table, csv, status = client.predict(files, model(context), api_name="/batch")
    assert status == ""
    rows = {row["file"]: row for row in (dict(zip(table["headers"], r)) for r in table["data"])}
    # Own names, never server paths; the flagged image first, marked (the CSV keeps the upload order).
    assert list(rows) == [CT_EXAMPLE.name, EXAMPLE.name, "broken.png"]
    assert rows[CT_EXAMPLE.name]["verdict"].startswith("⚠") and rows[EXAMPLE.name]["verdict"] == ""
    assert rows["broken.png"]["verdict"] == "not read"
    assert rows[EXAMPLE.name]["diagnosis"] in {"NoDR", "NPDR", "PDR"} and rows[EXAMPLE.name]["error"] == ""
    assert str(rows[CT_EXAMPLE.name]["ood"]) == "True"  # a grey phantom through the fundus model
    assert rows["broken.png"]["error"] and rows["broken.png"]["diagnosis"] == ""
    assert "broken.png" in rows["broken.png"]["error"] and "/" not in rows["broken.png"]["error"]  # its own name
    assert len(Path(csv).read_text().splitlines()) == 4
    archive = tmp_path / "some.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(EXAMPLE, f"images/{EXAMPLE.name}")
        zf.write(CT_EXAMPLE, f"images/{CT_EXAMPLE.name}")
    table, _, status = client.predict([gradio_client.handle_file(str(archive))], model(context), api_name="/batch")
    files = [dict(zip(table["headers"], r))["file"] for r in table["data"]]
    assert status == "" and sorted(files) == sorted(f"images/{f.name}" for f in (CT_EXAMPLE, EXAMPLE))


def test_api_report_downloads_and_names_the_model(app, client):
    context, _ = app
    report, status = client.predict(gradio_client.handle_file(str(EXAMPLE)), model(context), "none", 0, 0,
                                    "Grad-CAM", 0.5, api_name="/report")
    text = Path(report).read_text()
    entry = context.zoo.entry(model(context))
    assert status == "" and Path(report).name == f"{EXAMPLE.stem}-report.html"
    assert entry.title in text and entry.name in text and "not a medical device" in text
    assert text.count("<figure>") == 4 and "Validation metrics" in text  # the four maps and the model card


def print_to_text(html: Path, pdf: Path) -> str | None:
    """An HTML file printed by headless chromium, as pdftotext reads the PDF (pages split by form
    feeds); None without pdftotext."""
    import shutil
    import subprocess

    if not shutil.which("pdftotext"):
        return None
    subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--no-pdf-header-footer", f"--print-to-pdf={pdf}", html.as_uri()],
                   check=True, capture_output=True, timeout=120)
    return subprocess.run(["pdftotext", "-layout", str(pdf), "-"], check=True, capture_output=True, text=True).stdout


@pytest.mark.browser
def test_the_case_report_prints_with_its_verdict_maps_and_colour_scale(app, client, tmp_path):
    """The report printed by headless chromium (as a clinician prints it to attach): the date and
    model, the verdict first, the maps with their method and opacity and the colour scale, the
    card as a table; for a flagged X-ray through the CT model, the verdict says not to use it,
    the probabilities are struck out and no map is shown."""
    import shutil

    if not CHROMIUM.is_file() or not shutil.which("pdftotext"):
        pytest.skip("needs Debian's chromium and poppler's pdftotext (apt-get install chromium poppler-utils)")
    context, _ = app
    xray = tmp_path / "chest_xray.png"
    Image.fromarray(drawn_chest_xray()).save(xray)
    printed = {}
    for name, image, chosen in (("fundus", EXAMPLE, model(context)), ("xray", xray, model(context, "ct-iqad"))):
        report, status = client.predict(gradio_client.handle_file(str(image)), chosen, "none", 0, 0, "Grad-CAM", 0.4,
                                        api_name="/report")
        assert status == ""
        html_text = Path(report).read_text()
        assert "|---" not in html_text and "<table>" in html_text.split("Model card")[-1]  # the card rendered
        printed[name] = (html_text, print_to_text(Path(report), tmp_path / f"{name}.pdf"))
    html_text, text = printed["fundus"]
    first_page = text.split("\f")[0]
    assert "In distribution" in first_page and context.zoo.entry(model(context)).title in first_page
    assert "Class activation maps (Grad-CAM, opacity 40%)" in text and "strongest" in text and "no evidence" in text
    assert html_text.count("<figure>") == 4 and 'class="struck"' not in html_text
    html_text, text = printed["xray"]
    assert "Out of distribution: do not use the diagnosis" in text.split("\f")[0]
    assert html_text.count('class="struck"') == 2 and "<figure>" not in html_text and "strongest" not in text


def test_api_cam_gives_every_branch(app, client):
    context, _ = app
    gallery, status = client.predict(gradio_client.handle_file(str(EXAMPLE)), model(context), "none", 0, 0,
                                     "EigenCAM", 0.5, api_name="/cam")
    assert status == ""
    assert [item["caption"].split(" → ")[0] for item in gallery] == [
        "diagnosis branch", "quality branch", "auxiliary ω branch", "fused diagnosis"]
    assert Image.open(gallery[0]["image"]).size == (256, 256)


def test_api_ct_model_reads_dicom(app, client):
    context, _ = app
    if not context.zoo.names("ct-iqad", "vanilla"):
        pytest.fail("the bundled CT-IQAD models are missing")
    _, diagnosis, quality, reading, _, status = client.predict(
        gradio_client.handle_file(str(CT_EXAMPLE)), model(context, "ct-iqad", "vanilla"), "ct.streak", 3, 0,
        api_name="/predict")
    assert status == "" and {c["label"] for c in diagnosis["confidences"]} == {"non-COVID", "COVID-19"}
    assert quality["label"] == "no quality head"
    # The example is a digital phantom, not a CT-IQAD slice: the guard says so instead of a diagnosis.
    assert "does not look like the model's training data" in reading and "Do not use" in reading


def test_api_ood(app, client):
    context, _ = app
    keys = [k for _, k in context.packs.choices("synth-fundus")]
    _, table, status = client.predict(keys, "f1", 0.8, api_name="/ood")
    assert status == "" and len(table["data"]) == len(keys) and table["headers"][2] == "F1"


def test_api_referral(app, client):
    context, _ = app
    keys = [k for _, k in context.packs.choices("ct-iqad")]
    figure, points, status = client.predict(keys, 0.05, 0.1, api_name="/referral")
    assert status == ""
    names = [trace["name"] for trace in json.loads(figure["plot"])["data"]]
    assert any("refer by quality" in n for n in names) and any("refer by confidence" in n for n in names)
    # One certified operating point per run and rule, in words; at ε = 5 % the CT MKCNet's confidence
    # rule diagnoses a share (docs/workbench.md: 52 %), drawn as a marker on the curves.
    rows = [dict(zip(points["headers"], row)) for row in points["data"]]
    rules = sum(len(trust_scores(context.packs.entry(k).pack)) for k in keys)  # vanilla: confidence alone
    assert rules >= 4 and len(rows) == rules and all("error among those kept ≤ 5%" in r["operating point"]
                                               or "refer every image" in r["operating point"] for r in rows)
    assert any(r["diagnosed"] != "none (refer all)" for r in rows)
    assert any("certified operating points" in n for n in names)


def test_api_reliability(app, client):
    figure, status = client.predict("ct-iqad", api_name="/reliability")
    names = [trace["name"] for trace in json.loads(figure["plot"])["data"]]
    assert status == "" and sum("calibrated (ECE" in n for n in names) == 2 and sum("raw (ECE" in n for n in names) == 2


def test_api_embedding_and_point(app, client):
    context, _ = app
    key = model(context)
    _, _, scores, status = client.predict(key, "quality", "umap", "joint", api_name="/embedding")
    assert status == "" and "quality" in [row[0] for row in scores["data"]]
    image, details, status = client.predict(key, "quality", "umap", "3", api_name="/embedding_point")
    assert status == "" and details.startswith("**#3**")
    assert image is not None  # the synthetic image, regenerated from its seed
    count = len(context.packs.entry(key).pack.predictions)
    *_, status = client.predict(key, "quality", "umap", str(count), api_name="/embedding_point")
    assert status == f"⚠️ no image #{count}: this pack holds images #0 to #{count - 1}"


def test_api_compare(app, client):
    context, _ = app
    out = client.predict(gradio_client.handle_file(str(EXAMPLE)), "synth-fundus", "Grad-CAM", 0.5,
                         api_name="/compare")
    vanilla, full, status = out[1:5], out[5:9], out[9]
    assert status == "" and len(full[3]) == 4
    # The official VanillaNet has no branch and no fusion: one map, of the backbone, not called fused.
    assert [item["caption"].split(" → ")[0] for item in vanilla[3]] == ["shared backbone"]
    assert "no quality head" in vanilla[2] and "Image quality" in full[2]


def test_bad_uploads_get_a_message_and_the_server_stays_up(app, client, tmp_path):
    context, _ = app
    for name, (data, message) in BAD_FILES.items():
        (tmp_path / name).write_bytes(data)
        *_, status = client.predict(gradio_client.handle_file(str(tmp_path / name)), model(context), "none", 0, 0,
                                    api_name="/predict")
        assert status.startswith("⚠️") and message in status, (name, status)
    _, diagnosis, *_, status = client.predict(gradio_client.handle_file(str(EXAMPLE)), model(context), "none", 0, 0,
                                              api_name="/predict")
    assert status == "" and diagnosis["label"] in {"NoDR", "NPDR", "PDR"}


# ---- a real browser -------------------------------------------------------------------------------

def images_shown(page, selector: str, count: int) -> None:
    """Wait until at least `count` images match and every one has loaded (no fixed sleeps:
    a loaded machine only makes this take longer). How long the app takes to become usable is
    measured by benchmarks/startup.py, not asserted here."""
    page.wait_for_function(
        "([selector, count]) => { const images = [...document.querySelectorAll(selector)];"
        " return images.length >= count && images.every(i => i.complete && i.naturalWidth > 0); }",
        arg=[selector, count])


def shows_its_whole_prompt(page, selector: str) -> None:
    """The empty upload box `selector` shows its label and its whole prompt ("Drop File Here - or -
    Click to Upload"): nothing cut off, the label over none of it."""
    page.locator(f"{selector} .upload-container .wrap").first.wait_for()  # an accordion just opened renders it
    box = page.evaluate(
        "selector => { const box = document.querySelector(selector), r = e => e.getBoundingClientRect();"
        " const prompt = box.querySelector('.upload-container .wrap'), label = box.querySelector('label');"
        " return {cut: box.scrollHeight - box.clientHeight, text: prompt.innerText, box: r(box).bottom,"
        " top: r(prompt).top, bottom: r(prompt).bottom, label: r(label).bottom}; }", selector)
    assert box["cut"] <= 0 and "Click to Upload" in box["text"], box
    assert box["label"] <= box["top"] and box["bottom"] <= box["box"], box


def box(locator) -> dict:
    found = locator.first.bounding_box()
    assert found is not None, f"{locator} is not shown"
    return found


def above(upper, lower) -> bool:
    return box(upper)["y"] + box(upper)["height"] <= box(lower)["y"]


def left_of(left, right) -> bool:
    return box(left)["x"] + box(left)["width"] <= box(right)["x"]


def reads_before_tuning(page, examples, tuning, result: str = ".diagnosis") -> None:
    """At a narrow window (the columns stack) what picks the image (`examples`), then the result
    (the diagnosis), then the controls that tune or add to it (`tuning`); at a wide one the
    controls sit left of the result."""
    diagnosis = page.locator(result)
    page.set_viewport_size({"width": 820, "height": 1000})
    try:
        assert above(examples, diagnosis) and above(diagnosis, tuning)
    finally:
        page.set_viewport_size({"width": 1400, "height": 1000})
    assert left_of(tuning, diagnosis) and left_of(examples, diagnosis)


@pytest.mark.browser
def test_every_page_in_a_browser(app, tmp_path):
    if not CHROMIUM.is_file():
        pytest.skip("Debian's chromium is not installed (/usr/bin/chromium; apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    context, url = app
    shots = Path(os.environ.get("MKCNET_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    xray = tmp_path / "chest_xray.png"
    Image.fromarray(drawn_chest_xray()).save(xray)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM),
                                    args=["--headless", "--no-sandbox", "--disable-gpu",
                                          "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        outside = []
        page.on("request", lambda r: outside.append(r.url)
                if not r.url.startswith((url, "data:", "blob:")) else None)
        page.set_default_timeout(60_000)

        # Diagnose: upload an image, see probabilities and a CAM per branch (+ the fused one).
        maps = len(cam_targets(context.zoo.model(context.zoo.names()[0]).task_net))
        page.goto(url)
        page.locator(".cams img").nth(maps - 1).wait_for()  # the first example is analysed on load
        reads_before_tuning(page, page.locator(".examples"), page.get_by_text("What-if: degrade the image"))
        page.get_by_text("Your data set").first.click()
        shows_its_whole_prompt(page, ".data-upload")
        page.set_viewport_size({"width": 820, "height": 1000})
        shows_its_whole_prompt(page, ".data-upload")
        page.set_viewport_size({"width": 1400, "height": 1000})
        page.locator(".upload button[aria-label=Clear]").click()  # the loaded example gives way
        shows_its_whole_prompt(page, ".upload")
        page.locator(".upload input[type=file]").set_input_files(str(EXAMPLE))
        page.locator(f".upload [aria-label='{EXAMPLE.name}']").wait_for()
        images_shown(page, ".cams img", maps)
        body = page.inner_text("body")
        assert "Image quality" in body and "fused diagnosis" in body and "⚠️" not in body
        assert page.locator(".diagnosis.out-of-distribution").count() == 0  # read as a diagnosis
        assert page.locator(".limits").first.is_visible()  # the limits in plain sight, nothing to open
        assert page.locator(".colour-bar").first.is_visible()  # the maps' colour scale
        page.screenshot(path=str(shots / "diagnose.png"), full_page=True)
        # An image of another modality (a grey CT phantom through the fundus model): the warning shows.
        page.locator(".upload button[aria-label=Clear]").click()
        page.locator(".upload input[type=file]").set_input_files(str(CT_EXAMPLE))
        page.get_by_text("does not look like the model's training data").first.wait_for()
        assert "Do not use the diagnosis" in page.inner_text(".reading")
        # A chest X-ray (drawn: real ones stay out of the repository) through the CT model: the warning.
        page.get_by_label("Model", exact=True).click()
        page.get_by_role("option", name="MKCNet · CT-IQAD chest CT").click()
        page.locator(".upload button[aria-label=Clear]").click()
        page.locator(".upload input[type=file]").set_input_files(str(xray))
        page.locator(f".upload [aria-label='{xray.name}']").wait_for()
        ct_model = context.zoo.model(model(context, "ct-iqad"))
        expected = analyse(ct_model, load_for(ct_model, str(xray), context.images), DEFAULT_METHOD, 0.5)[0]
        said = expected.text.rsplit("(it would say", 1)[-1]  # what tells this image's reading from others
        assert expected.verdict.ood and "it would say" in expected.text
        page.wait_for_function("([sel, text]) => document.querySelector(sel)?.innerText.includes(text)",
                               arg=[".reading", said])
        reading = page.inner_text(".reading")
        assert "does not look like the model's training data" in reading and "Do not use the diagnosis" in reading
        page.locator(".diagnosis.out-of-distribution").first.wait_for()  # the top class struck out
        assert "not a diagnosis" in page.evaluate(
            "getComputedStyle(document.querySelector('.diagnosis.out-of-distribution'), '::after').content")
        page.screenshot(path=str(shots / "diagnose-xray-warning.png"), full_page=True)
        # Several images at once: the flagged X-ray's row comes first, marked, its diagnosis struck out.
        page.get_by_text("Several images at once").click()
        page.locator(".batch-in input[type=file]").set_input_files([str(EXAMPLE), str(xray)])
        page.get_by_role("button", name="Read them all").click()
        page.wait_for_function("document.querySelector('.batch')?.innerText.includes('not a diagnosis')")
        page.wait_for_function("[...document.querySelectorAll('.batch [role=gridcell]')].some(e => "
                               "getComputedStyle(e).textDecorationLine.includes('line-through'))")
        page.locator(".batch").first.screenshot(path=str(shots / "diagnose-batch.png"))
        # The model card: its reliability table and, drawn under it, the reliability diagram.
        page.get_by_role("button", name="Model card").click()
        page.locator("#card-reliability .js-plotly-plot .scatterlayer .trace").first.wait_for()
        assert page.locator("#card-reliability .js-plotly-plot").first.is_visible()
        assert "Reliability (diagnosis, validation images)" in page.inner_text(".card")

        # Embeddings: click a point, see its image.
        page.goto(url + "embeddings")
        point = page.locator("#embedding-plot .scatterlayer .point").first
        point.wait_for()
        point.click(force=True)
        page.locator(".point strong").first.wait_for()
        page.locator("img[src*='gradio_api/file']").last.wait_for()
        assert page.locator(".limits").first.is_visible()
        reads_before_tuning(page, page.get_by_text("Colour by", exact=True),
                            page.get_by_text("Evaluate a model on your data").first,
                            result="#embedding-plot")
        page.screenshot(path=str(shots / "embeddings.png"), full_page=True)

        # Out-of-distribution: curves and the table at the chosen ratio, for the real CT data.
        page.goto(url + "ood")
        page.locator(".js-plotly-plot .scatterlayer .trace").first.wait_for()
        page.get_by_label("Data set").click()
        page.get_by_role("option", name="ct-iqad").click()
        page.get_by_text("MKCNet · CT-IQAD chest CT").last.wait_for()
        page.wait_for_function("document.body.innerText.includes('Vanilla · CT-IQAD chest CT') && "
                               "!document.body.innerText.includes('Vanilla · synthetic fundus')")
        page.get_by_text("95% band").first.wait_for()
        page.locator(".js-plotly-plot .scatterlayer .trace").first.wait_for()
        page.locator("#referral-plot .js-plotly-plot .scatterlayer .trace").first.wait_for()  # risk-coverage
        assert page.locator(".limits").first.is_visible()
        page.screenshot(path=str(shots / "ood.png"), full_page=True)

        # Compare: both models' maps (the default data set's vanilla and MKCNet).
        page.goto(url + "compare")
        pair = [context.zoo.model(context.zoo.names(context.zoo.datasets()[0], m)[0]) for m in ("vanilla", "mkcnet")]
        images_shown(page, ".cams img", sum(len(cam_targets(m.task_net)) for m in pair))
        reads_before_tuning(page, page.locator(".examples"), page.get_by_text("CAM method", exact=True))
        page.locator("#reliability-plot .js-plotly-plot .scatterlayer .trace").first.wait_for()
        assert page.locator(".limits").first.is_visible()
        page.screenshot(path=str(shots / "compare.png"), full_page=True)
        # A grey X-ray through both colour fundus models: each panel strikes out its own diagnosis.
        assert page.locator(".diagnosis.out-of-distribution").count() == 0
        page.locator(".upload button[aria-label=Clear]").click()
        page.locator(".upload input[type=file]").set_input_files(str(xray))
        page.wait_for_function("document.querySelectorAll('.diagnosis.out-of-distribution').length === 2")
        browser.close()
    assert not outside, f"the app reached outside the machine: {outside[:3]}"


@pytest.mark.browser
def test_hosted_mode_in_a_browser(monkeypatch, tmp_path):
    """Hosted (as on Spaces): no server folder field; a visitor's zip becomes their examples, and
    follows them from page to page (the researcher's path): evaluated on Embeddings, the run is
    theirs on Out-of-distribution, and Compare evaluates both models on the same data set; the
    plain view (a hosted visitor's default) becomes the expert one on a click, on every page."""
    if not CHROMIUM.is_file():
        pytest.skip("Debian's chromium is not installed (/usr/bin/chromium; apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    monkeypatch.setenv("SPACE_ID", "mkcnet/test")
    monkeypatch.delenv("MKCNET_DATA", raising=False)
    context = Workbench(ModelZoo(), data_root="")
    assert context.hosting.hosted
    demo = build_app(context)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                **launch_options(context))
    root = write_dataset(tmp_path / "visitor", n_per_cell=2, rgb=True)
    archive = tmp_path / "my-fundus.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                zf.write(path, Path("my-fundus") / path.relative_to(root))
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM),
                                        args=["--headless", "--no-sandbox", "--disable-gpu",
                                              "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(url)
            images_shown(page, ".cams img", 2)
            assert "data folder on this machine" not in page.inner_text("body")
            # The clinician's path: their image → the plain reading → the case report, printed to PDF.
            page.locator(".upload button[aria-label=Clear]").click()
            page.locator(".upload input[type=file]").set_input_files(str(EXAMPLE))
            page.locator(f".upload [aria-label='{EXAMPLE.name}']").wait_for()
            page.wait_for_function("document.querySelector('.reading')?.innerText.includes('similar validation images')")
            assert "calibrated" not in page.inner_text(".reading") and "ω" not in page.inner_text(".cams")
            page.get_by_role("button", name="Case report (HTML)").click()
            link = page.locator(".report a[href*='report.html']").first
            link.wait_for()
            report = tmp_path / "report.html"
            report.write_bytes(page.request.get(link.get_attribute("href")).body())
            printed = print_to_text(report, tmp_path / "report.pdf")
            if printed is not None:  # chromium → PDF → text: what a printed page says
                first = printed.split("\f")[0]
                words = " ".join(printed.split())  # lines wrap anywhere on paper
                assert "In distribution" in first and "similar validation images" in words  # the verdict on top
                assert "strongest" in printed and "no evidence" in printed  # the maps' colour scale
                maps = printed.split("Class activation maps")[1].split("Model card")[0]
                assert "fused diagnosis" in maps and "ω" not in maps  # the plain view's maps
            page.get_by_text("Your data set").first.click()
            shows_its_whole_prompt(page, ".data-upload")
            page.locator(".data-upload input[type=file]").set_input_files(str(archive))
            page.get_by_text("your data set my-fundus.zip").wait_for()
            page.wait_for_function("document.querySelectorAll('.examples img').length == 4")
            images_shown(page, ".examples img", 4)
            page.locator(".examples img").first.click()  # one of the visitor's own images
            page.locator(".upload [aria-label^='img ']").wait_for()
            page.wait_for_function("document.body.innerText.includes('Image quality')")
            page.wait_for_function("document.body.innerText.includes('in its data set')")  # its true label
            assert "⚠️" not in page.inner_text("body")

            def shows(text: str) -> None:
                page.wait_for_function("text => document.body.innerText.includes(text)", arg=text)

            page.get_by_role("link", name="Embeddings").click()
            page.get_by_text("Evaluate a model on your data").first.click()
            shows("your data set my-fundus.zip")  # the upload on Diagnose is theirs here too
            page.get_by_role("button", name="Evaluate on my data (val.csv)").click()
            run = "MKCNet · synthetic fundus on your val.csv"
            page.wait_for_function("run => [...document.querySelectorAll('input')].some(i => i.value === run)", arg=run)
            page.get_by_role("link", name="Out-of-distribution").click()
            shows(run)  # among the runs, drawn and in the table
            page.locator(".js-plotly-plot").first.wait_for()
            page.get_by_role("link", name="Compare").click()
            page.get_by_text("Your data set").first.click()
            shows("your data set my-fundus.zip")
            page.get_by_role("button", name="Evaluate both on my data set").click()
            page.wait_for_function("['Vanilla · synthetic fundus', 'MKCNet · synthetic fundus'].every("
                                   "t => document.querySelector('#on-your-data')?.innerText.includes(t))")
            assert "⚠️" not in page.inner_text("body")
            # Hosted, a visitor starts in the plain view: no ω map, no "calibrated"; expert shows them, and
            # the visitor's choice holds on the next page.
            assert page.get_by_label("Plain").is_checked() and "ω" not in page.inner_text(".cams")
            assert "calibrated" not in page.inner_text(".reading")
            page.get_by_label("Expert").check()
            page.wait_for_function("[...document.querySelectorAll('.cams')].some("
                                   "c => c.innerText.includes('auxiliary ω branch'))")  # MKCNet's maps, beside vanilla's
            shows("calibrated")
            page.get_by_role("link", name="Diagnose").click()
            page.wait_for_function("document.querySelector('.cams')?.innerText.includes('auxiliary ω branch')")
            # The switch shows the view from its own event, which may land after the maps: wait for it.
            sync_api.expect(page.get_by_label("Expert")).to_be_checked(timeout=60_000)
            browser.close()
    finally:
        demo.close()
        context.sessions.shutdown()


def test_api_outputs_have_readable_names(app):
    context, _ = app
    info = build_app(context).get_api_info()
    unnamed = {name: [r["label"] for r in ep["returns"] if r["label"].startswith("value_")]
               for name, ep in info["named_endpoints"].items()}
    assert not any(unnamed.values()), unnamed


def test_declared_dropdown_choices_match_what_is_accepted(app):
    """A dropdown that takes any value (its choices follow the model or the session) declares a
    string; one that refuses other values declares exactly its choices."""
    import gradio as gr

    context, _ = app
    demo = build_app(context)
    dropdowns = [b for b in demo.blocks.values() if isinstance(b, gr.Dropdown)]
    assert any(d.allow_custom_value for d in dropdowns) and any(not d.allow_custom_value for d in dropdowns)
    for d in dropdowns:
        info = d.api_info()
        enum = (info["items"] if d.multiselect else info).get("enum")
        if d.allow_custom_value:
            assert enum is None, d.label
        else:
            assert enum == [value for _, value in d.choices], d.label


@pytest.mark.browser
def test_a_multiframe_ct_dicom_with_its_window_slice_set_and_margin_in_a_browser(tmp_path):
    """Diagnose with a 3-frame CT DICOM (made here from the bundled phantom): the slice slider, the
    window it was read with, the diagnosis set at the checkpoint's coverage and the robustness margin.
    The CT model's guard rightly flags a phantom (and a flagged reading shows neither set nor
    margin), so this app serves a copy of the bundled CT MKCNet without its guard."""
    if not CHROMIUM.is_file():
        pytest.skip("Debian's chromium is not installed (/usr/bin/chromium; apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    import shutil

    import numpy as np
    import pydicom

    from mkcnet.checkpoint import load_checkpoint, update_trust
    from tests.test_clinical_inputs import write_dicom

    bundled = project_path("checkpoints") / "ct-iqad-mkcnet"
    copy = shutil.copytree(bundled, tmp_path / "models" / "ct-iqad-mkcnet")
    loaded = load_checkpoint(copy)
    assert loaded.prediction_sets is not None and loaded.guard is not None
    update_trust(copy, loaded.calibration, None, prediction_sets=loaded.prediction_sets)
    context = Workbench(ModelZoo([tmp_path / "models"]), data_root="")
    demo = build_app(context)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                **launch_options(context))
    shots = Path(os.environ.get("MKCNET_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    phantom = pydicom.dcmread(CT_EXAMPLE)
    stored = phantom.pixel_array.astype(np.int32)
    frames = np.stack([np.clip(stored + shift, 0, 65535) for shift in (-40, 0, 40)])
    volume = write_dicom(tmp_path / "ct_three_slices.dcm", frames, float(phantom.RescaleSlope),
                         float(phantom.RescaleIntercept))
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.set_default_timeout(90_000)
            page.goto(url)
            page.locator(".reading").first.wait_for()
            page.get_by_role("button", name="DICOM and NIfTI: window and slice").click()
            page.locator(".upload button[aria-label=Clear]").click()
            page.locator(".upload input[type=file]").set_input_files(str(volume))
            page.wait_for_function("document.querySelector('.read-as')?.innerText.includes('slice 1 of 3')")
            # the CT model's own window is the lung window
            assert "model default window (C -600, W 1500)" in page.inner_text(".read-as")
            page.get_by_text("Robustness margin").click()
            page.wait_for_function("document.querySelector('.reading')?.innerText.includes('Robustness')")
            reading = page.inner_text(".reading")
            assert "At 90% confidence" in reading and ("holds through" in reading or "flips at" in reading)
            assert "⚠️" not in page.inner_text(".status")
            images_shown(page, ".cams img", 4)
            page.screenshot(path=str(shots / "diagnose-dicom-window-set-margin.png"), full_page=True)
            browser.close()
    finally:
        demo.close()
