"""`/assess` (JSON for scripts) and its MCP tool, on the launched workbench in hosted mode."""

from __future__ import annotations

import ast
import asyncio
import base64
import uuid

import pytest

import mkcnet.workbench  # (offline environment, as the app sets it)

gr = pytest.importorskip("gradio")
httpx = pytest.importorskip("httpx")

import mkcnet  # noqa: E402
from app import build_app, launch_options  # noqa: E402
from mkcnet.project import project_path  # noqa: E402
from mkcnet.workbench.context import Workbench  # noqa: E402
from mkcnet.workbench.hosting import free_port  # noqa: E402
from mkcnet.workbench.zoo import ModelZoo  # noqa: E402
from tests.test_hostile_client import call, check, hostile_values, upload  # noqa: E402
from tests.test_hostile_client import canary as canary  # noqa: E402  (the fixture, shared)

EXAMPLE = project_path("assets", "examples", "synth_PDR_good.png")
MODEL = "synth-fundus-mkcnet"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The real app, hosted mode (as on Spaces), with Gradio's MCP server on."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SPACE_ID", "mkcnet/test")
    mp.delenv("MKCNET_DATA", raising=False)
    mp.setenv("MKCNET_DATA_ROOTS", str(tmp_path_factory.mktemp("allowed")))
    context = Workbench(ModelZoo(), data_root="")
    assert context.hosting.hosted
    demo = build_app(context)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, mcp_server=True,
                **launch_options(context))
    try:
        yield context, demo, f"http://127.0.0.1:{port}/"
    finally:
        demo.close()
        context.sessions.shutdown()
        mp.undo()


def test_assess_returns_the_python_apis_assessment_as_json(served):
    from gradio_client import Client, handle_file

    _, _, url = served
    client = Client(url, verbose=False)
    result = client.predict(handle_file(str(EXAMPLE)), MODEL, api_name="/assess")
    expected = mkcnet.load(MODEL).predict([EXAMPLE])[0].to_dict()
    assert result["model"] == MODEL and result["source"] == EXAMPLE.name and result["error"] == ""
    for key in ("diagnosis", "quality", "calibrated", "ood", "diagnosis_set", "referral"):
        assert result[key] == expected[key], key
    for key in ("diagnosis_probabilities", "diagnosis_raw", "quality_probabilities"):
        assert result[key] == pytest.approx(expected[key], abs=1e-6), key
    assert result["runtime"] == "torch"  # the first call: the export to ONNX has only begun
    if not served[0].assessor.onnx:
        pytest.skip("onnxruntime is not installed (the onnx extra): /assess stays on torch")
    served[0].assessor.wait(MODEL)
    faster = client.predict(handle_file(str(EXAMPLE)), MODEL, api_name="/assess")
    assert faster["runtime"] == "onnxruntime"  # then the faster runtime answers: the same verdicts, to 1e-4
    for key in ("diagnosis", "quality", "calibrated", "ood", "diagnosis_set", "referral", "source", "error"):
        assert faster[key] == result[key], key
    for key in ("diagnosis_probabilities", "diagnosis_raw", "quality_probabilities", "ood_score"):
        assert faster[key] == pytest.approx(result[key], abs=1e-4), key


def test_assess_in_hosted_mode_takes_no_server_path(served, canary):
    """Every hostile value as the image or the model: never the canary's or a server file's
    assessment, no server path, no traceback; an unknown model is a one-line error."""
    context, demo, url = served
    dep = next(d for d in demo.config["dependencies"] if d.get("api_name") == "assess")
    with httpx.Client(timeout=60) as http:
        uploaded = upload(http, url, canary["zip"])
        session = f"assess-{uuid.uuid4().hex[:8]}"
        for j in range(2):
            for value in hostile_values(canary, uploaded):
                data = [upload(http, url, EXAMPLE), MODEL]
                data[j] = value
                messages = call(http, url, session, dep["id"], data)
                check(messages, http, url, context, canary, f"/assess input {j} = {str(value)[:60]!r}", sent=[data])
                done = [m for m in messages if m.get("msg") == "process_completed"]
                if done and done[0].get("success"):
                    out = done[0]["output"]["data"][0]
                    assert out.get("error") and not out.get("diagnosis"), f"assessed a hostile input: {value!r:.80}"
        fine = call(http, url, session, dep["id"], [upload(http, url, EXAMPLE), MODEL])
        done = next(m for m in fine if m.get("msg") == "process_completed")
        assert done["success"] and done["output"]["data"][0]["diagnosis"] in ("NoDR", "NPDR", "PDR")


@pytest.mark.filterwarnings("ignore:Use `streamable_http_client` instead")
def test_the_mcp_tool_assesses_an_image(served):
    pytest.importorskip("mcp")  # gradio[mcp], the `mcp` extra
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    _, _, url = served
    image = "data:image/png;base64," + base64.b64encode(EXAMPLE.read_bytes()).decode()

    async def session() -> tuple:
        async with streamablehttp_client(f"{url}gradio_api/mcp/http/") as (read, write, _):
            async with ClientSession(read, write) as mcp_session:
                await mcp_session.initialize()
                tools = {t.name: t for t in (await mcp_session.list_tools()).tools}
                result = await mcp_session.call_tool("assess", {"image": image, "model": MODEL})
                return tools, result

    tools, result = asyncio.run(session())
    assert "assess" in tools and "out-of-distribution" in tools["assess"].description
    assert set(tools["assess"].inputSchema["properties"]) == {"image", "model"}
    assert not result.isError, result
    text = "".join(c.text for c in result.content if getattr(c, "type", "") == "text")
    payload = ast.literal_eval(text)  # Gradio's MCP server sends a dict output as its Python repr
    assert payload["diagnosis"] in ("NoDR", "NPDR", "PDR") and payload["model"] == MODEL
    assert payload["ood"] is False and payload["error"] == ""
