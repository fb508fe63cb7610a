"""Issue 11: run folders have one writer; killed runs leave nothing that matters; names and stores that
would crash a run are handled; evaluate checks equivalence on every batch; files follow the umask."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from logitshift.cli import main
from logitshift.core.errors import LogitShiftError
from logitshift.core.files import RunLock, atomic_write, run_dir
from logitshift.runs import evaluate as evaluate_module
from logitshift.runs.store import Store

TESTS = Path(__file__).resolve().parent
MODULE = "ls_runfolder_tiny"


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A model module (``:tiny`` and a deliberately slow ``:slow``) and a folder of 6 small images."""
    from PIL import Image

    root = tmp_path_factory.mktemp("runfolder")
    (root / "mods").mkdir()
    (root / "mods" / f"{MODULE}.py").write_text(
        "import importlib.util, time\n"
        "from logitshift.core.models import LoadedModel, Preprocess\n"
        f"_spec = importlib.util.spec_from_file_location('ls_rf_conftest', {str(TESTS / 'conftest.py')!r})\n"
        "_conf = importlib.util.module_from_spec(_spec)\n"
        "_spec.loader.exec_module(_conf)\n"
        "class Slow(_conf.TinyCNN):\n"
        "    def forward(self, x):\n"
        "        time.sleep(0.4)\n"
        "        return super().forward(x)\n"
        "def tiny():\n"
        "    return LoadedModel(_conf.TinyCNN(10, 8, 0), 'tiny', 'features', Preprocess(size=32, resize=32), num_classes=10)\n"
        "def slow():\n"
        "    return LoadedModel(Slow(10, 8, 0), 'slow', 'features', Preprocess(size=32, resize=32), num_classes=10)\n"
    )
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (36, 40, 3), dtype=np.uint8)).save(images / f"im{i}.png")
    sys.path.insert(0, str(root / "mods"))
    yield root
    sys.path.remove(str(root / "mods"))


def args(ws: Path, out: Path, *extra: str, model: str = "tiny", images: str | None = None) -> list[str]:
    return [
        "evaluate",
        images or str(ws / "images"),
        "--model",
        f"{MODULE}:{model}",
        "--methods",
        "gradcam",
        "--scores",
        "logit",
        "--batch-size",
        "1",
        "--goal",
        "0",  # a random tiny CNN: no construction reaches half its map in a corner; measure what it does
        "--no-progress",
        "--no-plots",
        "--out",
        str(out),
        *extra,
    ]


def env(ws: Path) -> dict[str, str]:
    paths = [str(ws / "mods"), str(TESTS.parent / "src")] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("logitshift evaluate: error:"), err
    return err


def test_a_second_run_is_refused_naming_the_first_and_force_cannot_break_in(ws, tmp_path, capsys):
    """Two concurrent evaluate runs on one folder: the second exits 2 naming the first's pid; so does --force;
    the first finishes with every image, its files untouched."""
    out = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-m", "logitshift", *args(ws, out, model="slow")],
        env=env(ws),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lock = out / RunLock.NAME
    deadline = time.time() + 120
    while not (lock.exists() and lock.read_text().strip()) and first.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert first.poll() is None, first.communicate()
    assert main(args(ws, out)) == 2
    err = one_line(capsys)
    assert f"in use by another run (pid {first.pid} " in err, err
    assert main(args(ws, out, "--force")) == 2
    assert f"pid {first.pid}" in one_line(capsys)
    _stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    with Store(out / "results.sqlite") as st:
        assert len(st.finished()) == 6
    assert not lock.exists()  # released at the end
    assert main(args(ws, out, "--force")) == 0  # and the folder is free again


def test_killed_run_temporaries_are_removed_at_the_next_start(ws, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(args(ws, out)) == 0
    stale = [out / ".summary.json.x1.tmp.json", out / ".rows.csv.x2.tmp.csv"]
    (out / "plots").mkdir(exist_ok=True)
    stale.append(out / "plots" / ".metrics.png.x3.tmp.png")
    for p in stale:
        p.write_text("half written")
    (out / RunLock.NAME).write_text("999999 (a killed run)\n")  # its lock died with it: not held
    assert main(args(ws, out, "--resume")) == 0
    assert not [p for p in stale if p.exists()]


def test_non_utf8_names_are_stored_escaped_and_reported(ws, tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "odd"
    folder.mkdir()
    good = os.path.join(os.fsencode(folder), b"caf\xe9.png")  # Latin-1 bytes: not UTF-8
    Image.fromarray(np.zeros((36, 40, 3), np.uint8)).save(os.fsdecode(good), format="PNG")
    with open(os.path.join(os.fsencode(folder), b"bad\xff.png"), "wb") as fh:
        fh.write(b"not a png")
    out = tmp_path / "run"
    assert main(args(ws, out, images=str(folder))) == 0
    with Store(out / "results.sqlite") as st:
        names = {r["name"]: r["status"] for r in st.images()}
    assert names.get("caf\\xe9") == "done" and names.get("bad\\xff") == "bad", names
    assert main(args(ws, out, "--resume", images=str(folder))) == 0  # the same keys: nothing to redo


def test_a_corrupt_store_is_one_line_exit_2(ws, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.sqlite").write_bytes(b"this is not a database" * 100)
    assert main(args(ws, out, "--resume")) == 2
    assert "not a usable SQLite results store" in one_line(capsys)


def test_out_that_is_a_file_is_one_line_exit_2(ws, tmp_path, capsys):
    out = tmp_path / "file"
    out.write_text("x")
    assert main(args(ws, out)) == 2
    assert "exists and is not a folder" in one_line(capsys)
    assert out.read_text() == "x"


def test_out_below_a_file_is_one_line_exit_2(ws, tmp_path, capsys):
    """An --out that cannot be created (its parent is a file; works as root too): the OS error on one line."""
    parent = tmp_path / "file"
    parent.write_text("x")
    assert main(args(ws, parent / "run")) == 2
    err = one_line(capsys)
    assert "run" in err and "Not a directory" in err, err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_is_one_line_exit_2(ws, tmp_path, capsys):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        assert main(args(ws, parent / "run")) == 2
        assert "Permission denied" in one_line(capsys)
    finally:
        parent.chmod(0o700)


def test_equivalence_is_checked_on_every_batch(ws, tmp_path, monkeypatch):
    calls = []
    original = evaluate_module._check_equivalence
    monkeypatch.setattr(evaluate_module, "_check_equivalence", lambda *a, **k: (calls.append(1), original(*a, **k)))
    assert main(args(ws, tmp_path / "run")) == 0
    assert len(calls) == 6  # six batches of one image


def test_a_batch_that_breaks_equivalence_stops_the_run(ws, tmp_path, monkeypatch, capsys):
    """Only the 4th batch's logits are altered (a shift the check images did not reveal): the run stops with one line."""
    import torch

    from logitshift.attribution import engine

    real = engine.explain
    seen = []

    def explain(*a, **k):
        result = real(*a, **k)
        seen.append(1)
        if len(seen) == 4:
            result.logits["shifted"] = result.logits["shifted"] + torch.arange(result.logits["shifted"].shape[1]).float()
        return result

    monkeypatch.setattr(engine, "explain", explain)
    assert main(args(ws, tmp_path / "run")) == 2
    err = one_line(capsys)
    assert "prob" in err, err
    # issue 18 item 5: a refusal leaves no half-made run behind (the three batches before it were kept before)
    assert len(seen) == 4 and not (tmp_path / "run").exists()


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_output_files_follow_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        path = atomic_write(tmp_path / "x.json", "{}")
        path2 = atomic_write(tmp_path / "y.png", lambda tmp: Path(tmp).write_bytes(b"png"))
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
    assert path2.stat().st_mode & 0o777 == 0o666 & ~mask


def test_the_lock_is_held_by_one_holder_and_dropped_when_it_dies(tmp_path):
    folder = tmp_path / "f"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; sys.path.insert(0, sys.argv[1]); from logitshift.core.files import RunLock; "
            "RunLock(sys.argv[2]).acquire(); print('held', flush=True); time.sleep(60)",
            str(TESTS.parent / "src"),
            str(folder),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(Exception, match=f"pid {holder.pid}"):
        RunLock(folder).acquire()
    with pytest.raises(Exception, match=f"pid {holder.pid}"):
        run_dir(folder, force=True)  # demo, matrix, audit: refused too
    holder.kill()
    holder.wait()
    with RunLock(folder):  # the kernel dropped the dead holder's lock
        pass


@pytest.mark.parametrize("drops", [True, False])
def test_a_forked_worker_does_not_keep_the_run_locked_after_its_parent_dies(tmp_path, drops):
    """A DataLoader worker is a fork: it shares the run lock's open file. A killed run's worker that kept its copy
    would hold the folder until it noticed (seconds), and a resume started at once was refused (a flaky kill -9 test
    found it). Workers drop their copies (`drop_inherited_locks`); the control (`drops=False`) shows the lock held."""
    import os
    import signal
    import time

    from logitshift.core.errors import LogitShiftError
    from logitshift.core.files import _HELD, drop_inherited_locks

    lock = RunLock(tmp_path).acquire()
    pid = os.fork()
    if pid == 0:  # the worker
        if drops:
            drop_inherited_locks()
        time.sleep(30)
        os._exit(0)
    try:
        _HELD.discard(lock.fd)  # the parent "dies": its descriptor is closed without the tidy release
        os.close(lock.fd)
        lock.fd = None
        time.sleep(0.2)
        if drops:
            RunLock(tmp_path).acquire().release()  # free at once
        else:
            with pytest.raises(LogitShiftError, match="in use by another run"):
                RunLock(tmp_path).acquire()
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


# ----------------------------------------------------------------------------- issue 24: links planted in a run folder


def test_a_lock_planted_as_a_link_is_refused_and_its_target_untouched(ws, tmp_path, capsys):
    """``OUT/.logitshift.lock`` → a victim file: opened the old way (followed, truncated, the pid written) the victim
    is lost; ``evaluate`` refuses the link in one line and the victim keeps its bytes."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    old = tmp_path / "old"
    old.mkdir()
    (old / RunLock.NAME).symlink_to(victim)
    fd = os.open(old / RunLock.NAME, os.O_RDWR | os.O_CREAT, 0o666)  # the unprotected open
    os.ftruncate(fd, 0)
    os.write(fd, b"1234\n")
    os.close(fd)
    assert victim.read_text() == "1234\n"  # live: the link was followed
    victim.write_text("precious\n")
    out = tmp_path / "run"
    out.mkdir()
    (out / RunLock.NAME).symlink_to(victim)
    assert main(args(ws, out)) == 2
    assert "is a symbolic link" in one_line(capsys)
    assert victim.read_text() == "precious\n"
    with pytest.raises(LogitShiftError, match="is a symbolic link"):
        RunLock(out).acquire()
    (out / RunLock.NAME).unlink()
    os.mkfifo(out / RunLock.NAME)  # not a regular file either
    with pytest.raises(LogitShiftError, match="not a regular file"):
        RunLock(out).acquire()
    assert victim.read_text() == "precious\n"


def test_a_plots_folder_planted_as_a_link_is_refused_and_its_files_untouched(ws, tmp_path, capsys):
    """``OUT/plots`` → a folder of the victim's: the old ``--force`` left the link (``rmtree`` refuses links and its
    error was ignored) and wrote its PNGs through it; now ``evaluate --force`` and ``run_dir`` refuse in one line."""
    import shutil

    victims = tmp_path / "photos"
    victims.mkdir()
    (victims / "target_mass.png").write_bytes(b"mine")
    old = tmp_path / "old"
    old.mkdir()
    (old / "plots").symlink_to(victims)
    shutil.rmtree(old / "plots", ignore_errors=True)  # the unprotected --force
    atomic_write(old / "plots" / "target_mass.png", b"overwritten")
    assert (victims / "target_mass.png").read_bytes() == b"overwritten"  # live
    (victims / "target_mass.png").write_bytes(b"mine")
    out = tmp_path / "run"
    assert main(args(ws, out)) == 0
    (out / "plots").symlink_to(victims)
    assert main([a for a in args(ws, out, "--force") if a != "--no-plots"]) == 2
    assert "'plots' is a symbolic link" in one_line(capsys)
    assert (victims / "target_mass.png").read_bytes() == b"mine" and (out / "plots").is_symlink()
    with pytest.raises(LogitShiftError, match="'plots' is a symbolic link"):
        run_dir(out, force=True)
    link = tmp_path / "linked-out"
    link.symlink_to(out)
    with pytest.raises(LogitShiftError, match="the folder is a symbolic link"):
        run_dir(link, force=True)
