"""A hostile visitor against the launched workbench: every event the app has (named, private,
hidden) called through Gradio's raw queue protocol with hostile values, in hosted and in local
mode; two sessions that must not see each other's data; uploads gone when a session ends.

The app is the real one (`app.build_app`) with the bundled models. A canary file outside every
allowed root — an image, and a text file, listed by a split file beside them — must never come
back, nor /etc/passwd, nor any file outside the app's assets, checkpoints and the visitor's own
uploads; no message may carry a traceback or a server path; the server must keep answering.
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import time
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import mkcnet.workbench  # noqa: F401  (offline environment, as the app sets it)

gr = pytest.importorskip("gradio")
httpx = pytest.importorskip("httpx")

from app import build_app, launch_options  # noqa: E402
from mkcnet.project import project_path  # noqa: E402
from mkcnet.workbench.context import Workbench  # noqa: E402
from mkcnet.workbench.hosting import free_port  # noqa: E402
from mkcnet.workbench.zoo import ModelZoo  # noqa: E402
from tests.conftest import write_dataset  # noqa: E402

# Hostile values make Gradio warn on every call ("Expected a float, but ..."): expected here.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
REPO = project_path()
EXAMPLE = project_path("assets", "examples", "synth_PDR_reject.png")
TOKEN = f"CANARY-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def canary(tmp_path_factory) -> dict:
    """A folder outside every allowed root: an image whose pixels spell the token, a text file
    holding it, a split file listing both (absolute and relative), and a zip that tries every
    trick to reach them."""
    outside = tmp_path_factory.mktemp("outside")
    rng = np.random.default_rng(abs(hash(TOKEN)) % 2**32)
    Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(outside / "canary.png")
    (outside / "canary.txt").write_text(TOKEN)
    (outside / "val.csv").write_text(f"image,diagnosis,quality\ncanary.png,0,1\n{outside / 'canary.png'},1,0\n"
                                     "canary.txt,0,0\n")
    archive = outside / "hostile.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("val.csv", f"image,diagnosis,quality\n{outside / 'canary.png'},0,1\n"
                               f"{'../' * 12}{str(outside / 'canary.png').lstrip('/')},1,0\n")
        zf.writestr("../../escaped.txt", TOKEN)
        link = zipfile.ZipInfo("link.png")
        link.external_attr = (0o120777 << 16)
        zf.writestr(link, str(outside / "canary.png"))
    return {"folder": outside, "png": (outside / "canary.png").read_bytes(), "zip": archive}


def launch(monkeypatch, hosted: bool, allowed: Path):
    monkeypatch.delenv("MKCNET_DATA", raising=False)
    monkeypatch.setenv("MKCNET_DATA_ROOTS", str(allowed))
    if hosted:
        monkeypatch.setenv("SPACE_ID", "mkcnet/test")
    else:
        monkeypatch.delenv("SPACE_ID", raising=False)
    context = Workbench(ModelZoo(), data_root="")
    demo = build_app(context)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                **launch_options(context))
    return context, demo, f"http://127.0.0.1:{port}/"


# ---- the raw queue protocol ----------------------------------------------------------------------

def call(http: httpx.Client, url: str, session: str, fn_index: int, data: list, event_data=None) -> list[dict]:
    """Join the queue for one event and read its messages until it completes."""
    joined = http.post(f"{url}gradio_api/queue/join", json={
        "data": data, "fn_index": fn_index, "session_hash": session, "event_data": event_data, "trigger_id": None})
    if joined.status_code != 200:
        return [{"msg": "refused", "status": joined.status_code, "text": joined.text}]
    event_id = joined.json().get("event_id")
    messages = []
    with http.stream("GET", f"{url}gradio_api/queue/data", params={"session_hash": session}, timeout=120) as stream:
        for line in stream.iter_lines():
            if not line.startswith("data:"):
                continue
            message = json.loads(line[5:])
            messages.append(message)
            if message.get("msg") == "process_completed" and message.get("event_id") == event_id:
                break
            if message.get("msg") in ("close_stream", "unexpected_error"):
                break
    return messages


def upload(http: httpx.Client, url: str, path: Path) -> dict:
    """A file through Gradio's own upload route (what a browser does first), as FileData."""
    with open(path, "rb") as f:
        response = http.post(f"{url}gradio_api/upload", files={"files": (path.name, f)})
    server_path = response.json()[0]
    return {"path": server_path, "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}


def file_data(path) -> dict:
    return {"path": str(path), "orig_name": Path(path).name, "meta": {"_type": "gradio.FileData"}}


def hostile_values(canary: dict, uploaded: dict) -> list:
    """What a visitor may send for any input: server paths, chains, the canary's folder and
    files, the repo's own files, wrong types, out-of-range numbers, an oversized string."""
    folder = canary["folder"]
    paths = ["/etc/passwd", "../" * 12 + "etc/passwd", str(folder), str(folder / "canary.png"), str(REPO),
             str(REPO / "pyproject.toml"), str(Path(tempfile.gettempdir())), "~/.ssh"]
    return [*paths, file_data("/etc/passwd"), file_data(folder / "canary.png"), [file_data(folder / "canary.png")],
            uploaded, [uploaded], -1, 10**12, 1e308, None, ["x", 3], {"path": "/etc/passwd"}, True,
            "A" * 200_000]


EVENT_DATA = [{"index": 0, "value": None}, {"index": -1}, {"index": 10**9}, {"index": "0"}, {"index": [0, 1]},
              None, {"value": "/etc/passwd"}]


# ---- what must never come back ---------------------------------------------------------------------

def strings(value, found: list[str]) -> list[str]:
    if isinstance(value, str):
        found.append(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key not in ("path", "url"):  # file references are checked by fetching them
                strings(item, found)
    elif isinstance(value, list):
        for item in value:
            strings(item, found)
    return found


def parts(value) -> list:
    """A value and everything inside it (how an echo may render any of them)."""
    inner = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return [value] + [p for item in inner for p in parts(item)]


def files(value, found: list[dict]) -> list[dict]:
    if isinstance(value, dict):
        if "path" in value and ("url" in value or value.get("meta", {}).get("_type") == "gradio.FileData"):
            found.append(value)
        for item in value.values():
            files(item, found)
    elif isinstance(value, list):
        for item in value:
            files(item, found)
    return found


def check(messages: list[dict], http: httpx.Client, url: str, context: Workbench, canary: dict, where: str,
          sent: list | None = None) -> None:
    server_paths = [str(REPO), tempfile.gettempdir() + "/", str(canary["folder"]), "/etc/", str(Path.home())]
    # The visitor's own values echoed back ("X is not in the list of choices") tell them nothing
    # new, nor does Gradio's cache folder, which every file URL it serves names.
    echoes = sorted({str(v) for v in parts(sent or []) if len(str(v)) > 2}, key=len, reverse=True)
    echoes.append(str(Path(gr.utils.get_upload_folder()).resolve()))
    for message in messages:
        text = strings(message, [])
        for s in text:
            for echo in echoes:
                s = s.replace(echo, "")
            assert TOKEN not in s and "root:x:0:0" not in s, f"{where}: the canary or /etc/passwd came back"
            assert "Traceback" not in s, f"{where}: a traceback reached the visitor: {s[:300]}"
            leaked = [p for p in server_paths if p in s]
            assert not leaked, f"{where}: a server path reached the visitor ({leaked[0]}): {s[:300]}"
        for entry in files(message, []):
            path = Path(entry["path"]).resolve()
            inside = [Path(gr.utils.get_upload_folder()).resolve(), context.assets.resolve(),
                      project_path("checkpoints").resolve(), context.sessions.base.resolve()]
            assert any(path.is_relative_to(p) for p in inside), f"{where}: serves a file from {path}"
            if entry.get("url"):
                body = http.get(entry["url"]).content
                assert canary["png"] not in body and TOKEN.encode() not in body and b"root:x:0:0" not in body, \
                    f"{where}: the canary or /etc/passwd was served"


# Hosted (anyone can reach it) in every run; local (the allowed folders) with -m slow.
@pytest.mark.parametrize("hosted", [True, pytest.param(False, marks=pytest.mark.slow)], ids=["hosted", "local"])
def test_every_event_with_hostile_values_leaks_nothing(monkeypatch, tmp_path, canary, hosted):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    context, demo, url = launch(monkeypatch, hosted, allowed)
    try:
        dependencies = demo.config["dependencies"]
        components = {c["id"]: c for c in demo.config["components"]}
        assert {d["id"] for d in dependencies} == set(demo.fns), "the app's events were not all found"
        with httpx.Client(timeout=60) as http:
            uploaded = upload(http, url, canary["zip"])
            values = hostile_values(canary, uploaded)
            session = f"hostile-{uuid.uuid4().hex[:8]}"
            # The states that hold server-side lists (the examples a gallery shows, as paths); a
            # panel's out-of-distribution flag is a bool the server writes and only restyles a box.
            states = {c["id"] for c in components.values()
                      if c["type"] == "state" and isinstance(demo.blocks[c["id"]].value, list)}

            def defaults(dep: dict) -> list:
                return [components[i]["props"].get("value") if i in components else None for i in dep["inputs"]]

            def attack(dep: dict, j: int, value, event_data) -> None:
                data = defaults(dep)
                if data:
                    data[j] = value
                where = (f"{'hosted' if hosted else 'local'} fn {dep['id']} ({dep.get('api_name')}), "
                         f"input {j} = {str(value)[:60]!r}, event {event_data}")
                check(call(http, url, session, dep["id"], data, event_data), http, url, context, canary, where,
                      sent=[data, event_data])

            # Every event, one input at a time turned hostile while the others keep valid values
            # (an attacker sends a real model name with a forged folder). An event wired again to the
            # same handler with the same inputs (Diagnose reads on a new file and on a control change)
            # runs the same code on the same values: it is attacked once.
            seen = set()
            for dep in dependencies:
                fn = demo.fns[dep["id"]].fn
                key = (getattr(fn, "__wrapped__", fn), tuple(dep["inputs"]))
                if key in seen:
                    continue
                seen.add(key)
                for j in range(max(1, len(dep["inputs"]))):
                    for k, value in enumerate(values):
                        attack(dep, j, value, EVENT_DATA[k % len(EVENT_DATA)])
            # Then every event that stores server-side state (an example list), each hostile value
            # in turn, each followed at once by every event that reads that state (a gallery pick),
            # with in-range and out-of-range indexes: the order an attacker would use.
            writers = [d for d in dependencies if states & set(d["outputs"])]
            assert writers, "no event stores state: the chained attack would test nothing"
            for writer in writers:
                readers = [d for d in dependencies if states & set(writer["outputs"]) & set(d["inputs"])]
                for j in range(max(1, len(writer["inputs"]))):
                    for value in values:
                        attack(writer, j, value, None)
                        for reader in readers:
                            for event_data in EVENT_DATA[:3]:
                                attack(reader, 0, defaults(reader)[0] if reader["inputs"] else None, event_data)
            kinds = {components[i]["type"] for dep in dependencies for i in dep["inputs"] if i in components}
            assert {"file", "textbox", "dropdown", "state"} <= kinds  # hostile values reached every kind of input
            # Still serving, and still right.
            assert http.get(url).status_code == 200
            predict = next(d for d in dependencies if d.get("api_name") == "predict")
            data = defaults(predict)  # the file, model and what-if first; the reading controls as they open
            data[:5] = [upload(http, url, EXAMPLE), context.zoo.names()[0], "none", 0, 0]
            fine = call(http, url, "after-" + session, predict["id"], data)
            done = next(m for m in fine if m.get("msg") == "process_completed")
            assert done["success"] and done["output"]["data"][-1] == ""
    finally:
        demo.close()
        context.sessions.shutdown()


def test_sessions_are_private_and_end_with_their_page(monkeypatch, tmp_path, tiny_dataset):
    """What one visitor uploads is invisible to another; when the first one's page closes
    (its heartbeat ends), their files are gone."""
    monkeypatch.setenv("SPACE_ID", "mkcnet/test")
    monkeypatch.delenv("MKCNET_DATA", raising=False)
    context = Workbench(ModelZoo(), data_root="")
    demo = build_app(context)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                **launch_options(context))
    url = f"http://127.0.0.1:{port}/"
    archive = tmp_path / "mine.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(tiny_dataset.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(tiny_dataset))
    config = demo.config
    upload_event = next(d for d in config["dependencies"]
                        if any(c["id"] in d["inputs"] and c["props"].get("elem_classes") == ["data-upload"]
                               for c in config["components"]))
    try:
        with httpx.Client(timeout=60) as http:
            # A's page is open: its heartbeat stream is what tells the server it is alive.
            heartbeat = socket.create_connection(("127.0.0.1", port))
            heartbeat.sendall(b"GET /gradio_api/heartbeat/visitor-a HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert heartbeat.recv(200).startswith(b"HTTP/1.1 200")
            messages = call(http, url, "visitor-a", upload_event["id"], [[upload(http, url, archive)]])
            done = next(m for m in messages if m.get("msg") == "process_completed")
            assert done["success"], done
            line = strings(done["output"]["data"], [])
            assert any("your data set **mine.zip**" in s for s in line), line
            a = context.sessions.get(type("R", (), {"session_hash": "visitor-a"})())
            assert a.data_root is not None and any(a.folder.rglob("*.png"))
            b = context.sessions.get(type("R", (), {"session_hash": "visitor-b"})())
            assert b.data_root is None and not b.folder.exists()
            assert b.packs.choices() == context.packs.choices()  # only the bundled packs
            folder = a.folder
            heartbeat.close()  # A closes the page
            deadline = time.monotonic() + 30
            while folder.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not folder.exists(), "the session's files outlived its page"
            assert "visitor-a" not in {s.key for s in context.sessions._sessions.values()}
    finally:
        demo.close()
        context.sessions.shutdown()


def test_zip_uploads_are_checked(tmp_path):
    from mkcnet.errors import UserError
    from mkcnet.workbench.hosting import Hosting, extract_dataset

    limits = Hosting(hosted=True, max_bytes=2**20, max_files=10)

    def zipped(name: str, entries: dict) -> Path:
        path = tmp_path / name
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for member, data in entries.items():
                zf.writestr(member, data)
        return path

    ok = zipped("ok.zip", {"set/val.csv": "image,diagnosis,quality\na.png,0,1\n", "set/a.png": b"x"})
    assert extract_dataset([ok], tmp_path / "out", limits) == tmp_path / "out" / "set"
    cases = {
        "slip.zip": ({"../evil.txt": "x", "val.csv": "h\n"}, "outside its folder"),
        "absolute.zip": ({"/etc/evil.txt": "x"}, "outside its folder"),
        "bomb.zip": ({"val.csv": "h\n", "big.bin": b"\0" * (3 * 2**20)}, "MB"),
        "many.zip": ({f"{i}.png": b"x" for i in range(11)}, "at most 10"),
        "nosplit.zip": ({"a.png": b"x"}, "no split file"),
    }
    for name, (entries, message) in cases.items():
        with pytest.raises(UserError, match=message):
            extract_dataset([zipped(name, entries)], tmp_path / "out", limits)
    link = tmp_path / "link.zip"
    with zipfile.ZipFile(link, "w") as zf:
        info = zipfile.ZipInfo("val.csv")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(UserError, match="link"):
        extract_dataset([link], tmp_path / "out", limits)
    (tmp_path / "not.zip").write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(UserError):
        extract_dataset([tmp_path / "not.zip"], tmp_path / "out", limits)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path.parent / "evil.txt").exists()


def test_hosted_mode_is_decided_by_address_spaces_or_flag():
    from mkcnet.workbench.hosting import Hosting

    assert not Hosting.decide("127.0.0.1", env={}).hosted and not Hosting.decide("localhost", env={}).hosted
    assert not Hosting.decide("::1", env={}).hosted
    assert Hosting.decide("0.0.0.0", env={}).hosted and Hosting.decide("192.0.2.7", env={}).hosted
    assert Hosting.decide("127.0.0.1", env={"SPACE_ID": "a/b"}).hosted
    assert Hosting.decide("127.0.0.1", hosted=True, env={}).hosted


def test_typed_folders_stay_inside_the_allowed_roots(tmp_path, tiny_dataset):
    from mkcnet.errors import UserError
    from mkcnet.workbench.hosting import Hosting

    local = Hosting.decide("127.0.0.1", env={"MKCNET_DATA_ROOTS": str(tiny_dataset.parent)})
    assert local.typed_folder(str(tiny_dataset)) == tiny_dataset.resolve()
    for outside in ("/etc", str(tiny_dataset / ".." / ".." ), str(tmp_path)):
        with pytest.raises(UserError, match="outside the folders"):
            local.typed_folder(outside)
    with pytest.raises(UserError, match="hosted"):
        Hosting.decide("0.0.0.0", env={}).typed_folder(str(tiny_dataset))


def test_split_rows_stay_inside_their_root(tmp_path):
    from mkcnet.data.dataset import read_split
    from mkcnet.errors import UserError

    root = write_dataset(tmp_path / "data", n_per_cell=2)
    outside = tmp_path / "secret.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(outside)
    (root / "link.png").symlink_to(outside)
    for row in (str(outside), "../secret.png", "link.png", "Images/../../secret.png"):
        split = tmp_path / "bad.csv"
        split.write_text(f"image,diagnosis,quality\nImages/img 00%1 (copy).png,0,0\n{row},1,1\n")
        with pytest.raises(UserError, match=r"bad.csv, row 3: .* lies outside the data-set root"):
            read_split(split, root)
        assert len(read_split(split, root, allow_outside_root=True)) == 2
    assert len(read_split(root / "val.csv", root)) == 4  # ordinary rows pass, "Images/../Images/x" too


def test_idle_and_surplus_sessions_are_closed(tiny_dataset):
    from mkcnet.workbench.imaging import ImageCache
    from mkcnet.workbench.packs import PackStore
    from mkcnet.workbench.sessions import Sessions

    visitor = lambda key: type("Request", (), {"session_hash": key})()  # noqa: E731
    sessions = Sessions(PackStore(ModelZoo([]), ImageCache()), max_sessions=2)
    a = sessions.get(visitor("a"))
    a.image_file(np.zeros((4, 4, 3), np.uint8))
    sessions.get(visitor("b"))
    sessions.get(visitor("b"))  # a known visitor again: nobody is evicted for it
    assert set(sessions._sessions) == {"a", "b"} and a.folder.exists()
    sessions.get(visitor("c"))  # one too many: the oldest idle one goes, files and all
    assert set(sessions._sessions) == {"b", "c"} and not a.folder.exists()
    sessions.idle_seconds = 0
    time.sleep(0.01)
    sessions.get(visitor("d"))
    assert set(sessions._sessions) == {"d"}
    sessions.shutdown()


def test_a_leaving_visitor_deletes_their_uploads_not_the_apps_shared_files(monkeypatch, tmp_path):
    """Gradio hands every visitor its one copy of the opening example; a visitor whose event sends
    it back did not upload it, and their leaving must not delete it (the next visitor's page would
    open on a missing file). Their own upload goes."""
    import shutil

    from mkcnet.workbench.sessions import gradio_copies

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    context = Workbench(ModelZoo([]), data_root="")
    example = next((context.assets / "examples").glob("*.png"))
    shared = gradio_copies(example)[0]  # where Gradio keeps its copy of the page's opening example
    shared.parent.mkdir(parents=True)
    shutil.copyfile(example, shared)
    mine = tmp_path / "gradio" / "0123abcd" / example.name  # the same name, the visitor's own bytes
    mine.parent.mkdir(parents=True)
    mine.write_bytes(example.read_bytes()[:-1])
    visitor = type("Request", (), {"session_hash": "visitor"})()
    context.session(visitor, str(shared), [str(mine)])
    context.sessions.close(visitor)
    assert shared.is_file() and not mine.exists()
    context.sessions.shutdown()


def test_a_visitor_is_one_session_across_their_pages_and_goes_with_the_last(tmp_path):
    """Pages linked to one server-issued key share the visitor's data; a key the server did not
    issue (or no longer holds) is never honoured; the visitor's files go a grace period after
    their last page closes, not while another page is open or one reopens in time."""
    from mkcnet.workbench.imaging import ImageCache
    from mkcnet.workbench.packs import PackStore
    from mkcnet.workbench.sessions import Sessions

    page = lambda key: type("Request", (), {"session_hash": key})()  # noqa: E731
    sessions = Sessions(PackStore(ModelZoo([]), ImageCache()), grace_seconds=0.3)
    opening = sessions.get(page("a"))  # the page's opening events come before its link
    opening.use_folder(tmp_path)
    key = sessions.link(None, page("a"))
    assert len(key) == 32 and sessions.get(page("a")) is opening  # what it did joins the visitor
    assert sessions.link(key, page("b")) == key and sessions.get(page("b")).data_root == tmp_path
    sessions.get(page("api")).use_folder(tmp_path)  # a client that never links: its own visitor
    for forged in ("0" * 32, key.upper(), "a", "api", None, 7):  # not issued: a new visitor, never another's
        other = sessions.link(forged, page(f"c{forged}"))
        assert other != key and sessions.get(page(f"c{forged}")).data_root is None
    opening.image_file(np.zeros((4, 4, 3), np.uint8))
    sessions.close(page("a"))
    time.sleep(0.5)
    assert sessions.get(page("b")) is opening and opening.folder.exists()  # page b is still open
    sessions.close(page("b"))  # the last page: its visitor waits out the grace period...
    assert sessions.link(key, page("d")) == key  # ...and a page opening meanwhile keeps it
    time.sleep(0.5)
    assert sessions.get(page("d")) is opening and opening.folder.exists()
    sessions.close(page("d"))
    time.sleep(0.6)
    assert not opening.folder.exists() and key not in sessions._sessions
    assert sessions.link(key, page("e")) != key  # an ended visitor's key is not honoured again
    sessions.shutdown()


def files_under(roots: list[Path], skip: list[Path]) -> dict[Path, int]:
    """Every file under `roots` (but `skip`), with its modification time."""
    found = {}
    for root in roots:
        for path in root.rglob("*") if root.is_dir() else []:
            try:
                if path.is_file() and not any(path.is_relative_to(s) for s in skip):
                    found[path] = path.stat().st_mtime_ns
            except OSError:  # another process's file, gone while listed
                continue
    return found


def test_nothing_of_a_visitor_outlives_their_session(monkeypatch, tmp_path, tmp_path_factory):
    """A hosted visitor uploads a data set, evaluates a model on it, embeds it, draws its
    out-of-distribution and referral curves, reads one of its images (probabilities, maps, a
    report) and compares the two models on it; when their page closes, no file written or
    changed meanwhile remains under the home, cache or temporary folders, nor anything in the
    app's in-memory image cache."""
    # The app's temporary folder (Gradio's uploads and copies, the sessions) and its image cache
    # are fresh folders of this test's, outside pytest's (which is not watched), so that no other
    # process on the machine writes in what is watched.
    temporary = Path(tempfile.mkdtemp(prefix="mkcnet-visit-"))
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    cache = temporary / "mkcnet-cache"
    monkeypatch.setenv("MKCNET_CACHE", str(cache))
    data = write_dataset(tmp_path_factory.mktemp("visitor") / "mine")
    archive = tmp_path_factory.mktemp("visitor-zip") / "mine.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(data.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(data))
    image = next((data / "Images").glob("*.png"))
    context, demo, url = launch(monkeypatch, True, tmp_path)
    dependencies = demo.config["dependencies"]

    def by_handler(name: str) -> dict:
        return next(d for d in dependencies if getattr(demo.fns[d["id"]].fn, "__name__", "") == name)

    def by_api(name: str) -> dict:
        return next(d for d in dependencies if d.get("api_name") == name)

    ct = context.zoo.names("ct-iqad", "mkcnet")[0]
    roots = [temporary, Path.home()]
    skip = [tmp_path_factory.getbasetemp()]
    try:
        with httpx.Client(timeout=120) as http:
            assert http.get(url).status_code == 200
            before = files_under(roots, skip)
            heartbeat = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1].strip("/"))))
            heartbeat.sendall(b"GET /gradio_api/heartbeat/visitor HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert heartbeat.recv(200).startswith(b"HTTP/1.1 200")

            components = {c["id"]: c for c in demo.config["components"]}

            def run(dep: dict, first: list) -> list:
                """The event with `first` as its first inputs, the others as the page opens them."""
                data = [components[i]["props"].get("value") if i in components else None for i in dep["inputs"]]
                data[:len(first)] = first
                messages = call(http, url, "visitor", dep["id"], data)
                done = next(m for m in messages if m.get("msg") == "process_completed")
                assert done["success"] and done["output"]["data"][-1] == "", (dep.get("api_name"), done)
                return done["output"]["data"]

            upload_event = next(d for d in dependencies if any(
                c["id"] in d["inputs"] and c["props"].get("elem_classes") == ["data-upload"]
                for c in demo.config["components"]))
            zipped = upload(http, url, archive)
            run(upload_event, [[zipped]])
            chosen = run(by_handler("evaluate_on_data"), [ct])[0]["value"]
            assert "your" in dict((k, v) for v, k in context.session(type("R", (), {"session_hash": "visitor"})())
                                  .packs.choices())[chosen]
            run(by_api("embedding"), [chosen, "diagnosis", "umap", "diagnosis"])
            run(by_api("ood"), [[chosen], "f1", 0.5])
            run(by_api("referral"), [[chosen], 0.05, 0.1])
            mine = upload(http, url, image)
            for name in ("predict", "cam", "report"):
                run(by_api(name), [mine, ct, "none", 0, 0])
            run(by_api("compare"), [mine, "ct-iqad"])
            session = context.session(type("R", (), {"session_hash": "visitor"})())
            received = {Path(zipped["path"]), Path(mine["path"])}
            assert all(p.is_file() for p in received) and session.folder.is_dir()  # the visit's traces, so far

            def remembered() -> list:
                return [k for k in context.images._items if Path(k[0]).is_relative_to(session.folder)
                        or Path(k[0]) in received]
            assert remembered()

            heartbeat.close()  # the page closes
            deadline = time.monotonic() + 30
            while "visitor" in context.sessions._sessions and time.monotonic() < deadline:
                time.sleep(0.2)
            assert "visitor" not in context.sessions._sessions, "the session outlived its page"
            # (Gradio's multipart parser leaves empty temporary files in its upload folder: they
            # hold nothing of anyone's.)
            left = {p for p, mtime in files_under(roots, skip).items()
                    if before.get(p) != mtime and p.stat().st_size > 0}
            assert not left, f"files of the visit remain: {sorted(map(str, left))[:10]}"
            assert not remembered()
    finally:
        demo.close()
        context.sessions.shutdown()
        shutil.rmtree(temporary, ignore_errors=True)
