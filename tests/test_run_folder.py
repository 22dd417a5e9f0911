"""Nothing lost, whatever happens to a run: one writer per run folder, a kill between any two writes
resumed bit for bit, a full or read-only disk as one line with the last good checkpoint intact,
and every temporary file a killed writer leaves removed at the next start."""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import mkcnet.checkpoint
import mkcnet.config
import mkcnet.training.trainer as trainer_module
from mkcnet.cli import main
from mkcnet.errors import UserError
from mkcnet.files import read_jsonl
from mkcnet.project import project_path
from mkcnet.run_lock import LOCK_NAME, RunInUse, hold_run
from mkcnet.training.trainer import STATE_FILE, STATE_KEY, Trainer
from tests.test_training_core import image_set, run_config

REPO = Path(__file__).resolve().parents[1]
FLAGS = ["--dataset", "ct-iqad", "--method", "vanilla", "--backbone", "resnet10t", "--image-size", "32",
         "--batch-size", "8", "--quiet", "--device", "cpu", "--val-split", ""]


def state_epoch(run: Path) -> int:
    with safe_open(str(run / STATE_FILE), "pt") as f:
        return json.loads(f.metadata()[STATE_KEY])["epoch"]


def temporaries(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir() if "tmp" in p.name)


# ---- one writer per run folder -------------------------------------------------------------------------

def test_a_second_train_on_a_running_folder_is_refused_and_the_first_keeps_its_history(tiny_dataset, tmp_path,
                                                                                         capsys):
    run = tmp_path / "run"
    args = ["train", "--root", str(tiny_dataset), "--out", str(run), *FLAGS]
    first = subprocess.Popen([sys.executable, "-m", "mkcnet", *args, "--epochs", "3", "--seed", "0"], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not ((run / LOCK_NAME).is_file() and (run / LOCK_NAME).read_text().strip()):
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.05)
        for extra in ([], ["--overwrite"]):  # --overwrite does not take a live run's folder either
            assert main([*args, "--epochs", "3", "--seed", "1", *extra]) == 2
            err = capsys.readouterr().err
            assert f"is in use by another run (PID {first.pid})" in err and "Traceback" not in err
        assert first.poll() is None  # the refusals came while the first run was still running
        _, stderr = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, stderr
    assert [r["epoch"] for r in read_jsonl(run / "history.jsonl")] == [1, 2, 3]
    assert json.loads((run / "config.json").read_text())["train"]["seed"] == 0
    # The first run has ended: its lock file (with its PID) is left, and the next writer takes it over.
    assert (run / LOCK_NAME).read_text().strip() == str(first.pid)
    with hold_run(run):
        assert (run / LOCK_NAME).read_text().strip() == str(os.getpid())


def test_the_lock_is_reentrant_in_one_process_and_exclusive_across_processes(tmp_path):
    run = tmp_path / "run"
    code = ("import sys, time\nfrom mkcnet.run_lock import hold_run\nwith hold_run(sys.argv[1]):\n"
            "    print('held', flush=True)\n    time.sleep(60)\n")
    other = subprocess.Popen([sys.executable, "-c", code, str(run)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "held"
        with pytest.raises(RunInUse, match=f"PID {other.pid}"):
            with hold_run(run):
                pass
    finally:
        other.kill()
        other.wait()
    with hold_run(run), hold_run(run):  # the holder is gone (killed): its lock went with it
        assert (run / LOCK_NAME).read_text().strip() == str(os.getpid())
    fresh = tmp_path / "refused"
    with pytest.raises(UserError), hold_run(fresh):
        raise UserError("a start that fails before writing anything")
    assert not fresh.exists()  # leaves no empty folder behind


# ---- a kill between any two writes --------------------------------------------------------------------

class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (no `except Exception` catches it)."""


def kill_after(monkeypatch, steps: int) -> list[str]:
    """Count every write step of a run (each atomic file write, each history append) and stop the
    process right after the `steps`-th has completed. Returns the names written."""
    written: list[str] = []

    def counted(function):
        def wrapper(path, *args):
            function(path, *args)
            written.append(Path(path).name)
            if len(written) == steps:
                raise Killed(Path(path).name)
        return wrapper

    for module, name in ((trainer_module, "append_line"), (trainer_module, "atomic_write"),
                         (mkcnet.checkpoint, "atomic_write"), (mkcnet.config, "atomic_write")):
        monkeypatch.setattr(module, name, counted(getattr(module, name)))
    return written


WRITES_OF_TWO_EPOCHS = 1 + 2 * 7  # config.json; per epoch: history.jsonl, history.csv, best ×2, last ×2, state


@pytest.fixture(scope="module")
def straight_run(tiny_dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("straight") / "run"
    train = image_set(tiny_dataset, "train.csv", run_config("vanilla", 2))
    with pytest.MonkeyPatch.context() as patch:
        written = kill_after(patch, steps=-1)  # counts, never kills
        Trainer(run_config("vanilla", 2), run, progress=False, verbose=False).fit(train)
    return run, train, written


# In the default run: before any state (1), a history row ahead of the state (2), just after the first
# state (8), the second epoch's checkpoints ahead of its state (14); every other step under -m slow.
FAST_STEPS = (1, 2, 8, 14)


@pytest.mark.parametrize("steps", [s if s in FAST_STEPS else pytest.param(s, marks=pytest.mark.slow)
                                   for s in range(1, WRITES_OF_TWO_EPOCHS + 1)])
def test_a_kill_after_any_write_resumes_bit_identical(steps, straight_run, tmp_path, monkeypatch):
    straight, train, _ = straight_run
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        written = kill_after(patch, steps)
        with pytest.raises(Killed):
            Trainer(run_config("vanilla", 2), run, progress=False, verbose=False).fit(train)
    assert len(written) == steps
    if (run / STATE_FILE).is_file():
        Trainer(run_config("vanilla", 2), run, progress=False, verbose=False).fit(train, resume=True)
    else:  # killed before the first state was written: nothing to resume, start again
        Trainer(run_config("vanilla", 2), run, progress=False, verbose=False).fit(train)
    expected, resumed = (load_file(str(r / STATE_FILE)) for r in (straight, run))
    assert set(expected) == set(resumed)
    for key in expected:
        assert torch.equal(expected[key], resumed[key]), f"killed after write {steps} ({written[-1]}): {key} differs"
    assert [r["epoch"] for r in read_jsonl(run / "history.jsonl")] == [1, 2]
    assert temporaries(run) == []


def test_the_kill_test_sees_every_write_of_a_run(straight_run):
    """The kill test above stops after each write it counts: a new write in the trainer must be
    counted too (and added to WRITES_OF_TWO_EPOCHS), or a kill right after it goes untested."""
    *_, written = straight_run
    epoch = ["history.jsonl", "history.csv", "best.safetensors", "best.json", "last.safetensors", "last.json",
             STATE_FILE]
    assert written == ["config.json", *epoch, *epoch] and len(written) == WRITES_OF_TWO_EPOCHS


def test_resume_refuses_another_network_but_not_another_reading_window(tiny_dataset, tmp_path):
    """A run resumes under a newer default window (how DICOM/NIfTI files are read, not the network),
    and refuses a config that builds another network."""
    config = run_config("vanilla", 1)
    train = image_set(tiny_dataset, "train.csv", config)
    run = tmp_path / "run"
    Trainer(config, run, progress=False, verbose=False).fit(train)
    windowed = run_config("vanilla", 2)
    windowed.model.window = (40.0, 400.0)  # a soft-tissue window instead of the lung one
    Trainer(windowed, run, progress=False, verbose=False).fit(train, resume=True)
    assert [r["epoch"] for r in read_jsonl(run / "history.jsonl")] == [1, 2]
    wider = run_config("vanilla", 3)
    wider.model.feature_dim *= 2
    with pytest.raises(UserError, match="another model configuration"):
        Trainer(wider, run, progress=False, verbose=False).fit(train, resume=True)


def test_temporaries_of_killed_writers_go_and_the_old_state_is_not_kept_mapped(tiny_dataset, tmp_path):
    train = image_set(tiny_dataset, "train.csv", run_config("vanilla", 1))
    run = tmp_path / "run"
    Trainer(run_config("vanilla", 1), run, progress=False, verbose=False).fit(train)
    for name in (".state.safetensors.tmp999999999", ".tmpAb12Cd", ".history.csv.tmp4194303"):  # ours; safetensors'
        (run / name).write_bytes(b"\0" * 1000)
    resumed = Trainer(run_config("vanilla", 2), run, progress=False, verbose=False)
    resumed.fit(train, resume=True)
    assert temporaries(run) == []
    maps = Path("/proc/self/maps")
    if maps.is_file():  # a replaced state file that stays mapped keeps its disk space in use
        assert str(run / STATE_FILE) not in maps.read_text()


# ---- a full or read-only disk --------------------------------------------------------------------------

@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "no space left on the device holding {}: the last good "
                                          "checkpoint is epoch 1; free space and resume with --resume"),
                                         (errno.EROFS, "{} is on a read-only file system: the last good checkpoint "
                                          "is epoch 1; make it writable and resume with --resume")])
def test_a_full_or_read_only_disk_is_one_line_and_the_last_checkpoint_stays(code, words, straight_run, tmp_path,
                                                                            monkeypatch):
    straight, train, _ = straight_run
    run = tmp_path / "run"
    original = Path.write_bytes

    def write_bytes(self, data):  # the second state write fails half-way, as a full disk does
        if self.name.startswith(f".{STATE_FILE}.tmp") and (run / STATE_FILE).is_file():
            original(self, data[:len(data) // 2])
            raise OSError(code, os.strerror(code), str(self))
        return original(self, data)

    with monkeypatch.context() as patch:
        patch.setattr(Path, "write_bytes", write_bytes)
        with pytest.raises(UserError) as caught:
            Trainer(run_config("vanilla", 2), run, progress=False, verbose=False).fit(train)
    assert str(caught.value) == words.format(run)
    assert state_epoch(run) == 1 and temporaries(run) == []
    Trainer(run_config("vanilla", 2), run, progress=False, verbose=False).fit(train, resume=True)  # space freed
    expected, resumed = (load_file(str(r / STATE_FILE)) for r in (straight, run))
    assert all(torch.equal(expected[k], resumed[k]) for k in expected)


@pytest.fixture
def read_only(monkeypatch):
    """Every write under the returned folder fails with EROFS, as on a read-only mount (root ignores
    permission bits, so chmod cannot stand in for it)."""
    folder: Path | None = None  # set by the returned function

    def refuse(path) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    def under(path) -> bool:
        return (folder is not None and isinstance(path, str | os.PathLike)
                and Path(os.path.abspath(path)).is_relative_to(folder))

    real_open, real_os_open, real_mkdir = builtins.open, os.open, Path.mkdir

    def guarded_open(file, mode="r", *args, **kwargs):
        if under(file) and any(c in mode for c in "wax+"):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, *args, **kwargs):
        if under(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(path)
        return real_os_open(path, flags, *args, **kwargs)

    def guarded_mkdir(self, *args, **kwargs):
        if under(self) and not self.is_dir():
            refuse(self)
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(io, "open", guarded_open)
    monkeypatch.setattr(os, "open", guarded_os_open)
    monkeypatch.setattr(Path, "mkdir", guarded_mkdir)

    def set_folder(path: Path) -> Path:
        nonlocal folder
        folder = Path(os.path.abspath(path))
        real_mkdir(folder, parents=True, exist_ok=True)
        return folder

    return set_folder


def test_read_only_outputs_are_one_line_and_an_unwritable_cache_is_skipped(tiny_dataset, tmp_path, read_only,
                                                                           monkeypatch, capsys):
    model = project_path("checkpoints") / "ct-iqad-vanilla"
    image = next((tiny_dataset / "Images").iterdir())
    locked = read_only(tmp_path / "read-only")
    for command in (["train", "--root", str(tiny_dataset), "--out", str(locked / "run"), *FLAGS, "--epochs", "1"],
                    ["evaluate", str(model), str(tiny_dataset / "val.csv"), "--out", str(locked / "pack"), "--quiet",
                     "--device", "cpu"],
                    ["predict", str(model), str(image), "-o", str(locked / "out.csv"), "--device", "cpu"],
                    ["cam", str(model), str(image), "--out", str(locked / "cams"), "--device", "cpu"]):
        assert main(command) == 2, command[0]
        err = capsys.readouterr().err
        assert "is on a read-only file system" in err and "Traceback" not in err, err
        lines = err.strip().splitlines()  # what the command was doing (progress, "…"), then the error in one line
        assert all(line.endswith("…") for line in lines[:-1]) and "read-only" in lines[-1], err
    monkeypatch.setenv("MKCNET_CACHE", str(locked / "cache"))  # the cache is optional: never fatal
    with pytest.warns(UserWarning, match="image cache not written .* read-only file system"):
        assert main(["evaluate", str(model), str(tiny_dataset / "val.csv"), "--out", str(tmp_path / "pack"),
                     "--quiet", "--device", "cpu"]) == 0
