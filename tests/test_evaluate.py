"""``logitshift evaluate``: the batch engine, the resumable store, torchrun scale-out, bad files.

A small random CNN (``TinyCNN``, 32×32 inputs) is given to the command as a
``package.module:factory`` model spec from a temporary module, so every run
(in-process, a subprocess, two torchrun ranks) builds the very same model.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from logitshift.attribution import METHODS, GradCAM, forward_pass, get_method
from logitshift.attribution.engine import explain
from logitshift.cli import main
from logitshift.runs.evaluate import EvalConfig, run_evaluate
from logitshift.runs.store import KEY, Store
from logitshift.shift.model import PaperShift, RegionShift, ShiftedModel

TESTS = Path(__file__).resolve().parent
MODULE = "ls_eval_tiny"
GOOD = 24  # good images in the test folder
BAD = {"empty.png": "empty file", "text.jpg": "not a readable image", "truncated.png": "not a readable image"}
SCORES = ["logit", "prob", "logprob", "centered", "contrast"]
CLASSES = ["3", "7"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A model module (``ls_eval_tiny:tiny``) and an image folder with good and unreadable files."""
    from PIL import Image

    root = tmp_path_factory.mktemp("evaluate")
    (root / "mods").mkdir()
    (root / "mods" / f"{MODULE}.py").write_text(
        "import importlib.util\n"
        "from logitshift.core.models import LoadedModel, Preprocess\n"
        f"_spec = importlib.util.spec_from_file_location('ls_eval_conftest', {str(TESTS / 'conftest.py')!r})\n"
        "_conf = importlib.util.module_from_spec(_spec)\n"
        "_spec.loader.exec_module(_conf)\n"
        "def tiny():\n"
        "    return LoadedModel(_conf.TinyCNN(10, 8, 0), 'tiny', 'features', Preprocess(size=32, resize=32), num_classes=10)\n"
    )
    images = root / "images"
    rng = np.random.default_rng(0)
    for i in range(GOOD):
        folder = images / ("nested/deeper" if i % 3 == 0 else "")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (36 + i % 5, 44, 3), dtype=np.uint8)).save(folder / f"im{i:02d}.png")
    (images / "empty.png").write_bytes(b"")
    (images / "text.jpg").write_text("this is not a JPEG")
    whole = (images / "im01.png").read_bytes()
    (images / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (images / "notes.txt").write_text("not an image: skipped")
    sys.path.insert(0, str(root / "mods"))
    yield root
    sys.path.remove(str(root / "mods"))


def config(ws: Path, out: Path, **kw) -> EvalConfig:
    base = dict(
        images=[str(ws / "images")],
        out=str(out),
        model=f"{MODULE}:tiny",
        methods=["gradcam"],
        scores=SCORES,
        classes=CLASSES,
        batch_size=2,
        workers=0,
        progress=False,
        plots=False,
        goal=0.0,  # a random 8-channel CNN: no construction puts half its map in a corner; measure what it does
    )
    base.update(kw)
    return EvalConfig(**base)


def cli_args(ws: Path, out: Path, *extra: str) -> list[str]:
    return [
        "evaluate",
        str(ws / "images"),
        "--model",
        f"{MODULE}:tiny",
        "--methods",
        "gradcam",
        "--scores",
        *SCORES,
        "--class",
        CLASSES[0],
        "--class",
        CLASSES[1],
        "--batch-size",
        "2",
        "--goal",
        "0",
        "--no-progress",
        "--no-plots",
        "--out",
        str(out),
        *extra,
    ]


def sub_env(ws: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ws / "mods")] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def rows_of(out: Path) -> list[dict]:
    with Store(out / "results.sqlite") as st:
        return st.rows()


def assert_same_rows(got: list[dict], want: list[dict], tol: float = 0.0) -> None:
    keys = [tuple(r[k] for k in KEY) for r in got]
    assert len(keys) == len(set(keys)), "duplicate rows"
    assert keys == [tuple(r[k] for k in KEY) for r in want], "missing or extra rows"
    for r, w in zip(got, want):
        for field, value in w.items():
            if isinstance(value, float):
                assert abs(r[field] - value) <= tol, (field, r, w)
            else:
                assert r[field] == value, (field, r, w)


@pytest.fixture(scope="module")
def reference(workspace, tmp_path_factory):
    """An uninterrupted single-process run: its summary and rows."""
    out = tmp_path_factory.mktemp("ref") / "run"
    summary = run_evaluate(config(workspace, out))
    return summary, rows_of(out)


# ----------------------------------------------------------------------------- the engine


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("head_dtype", [None, torch.float64])
def test_engine_serves_every_request_from_one_pass(tiny_cnn, batched, head_dtype):
    """Every (class, score, variant) map of the batch engine equals Grad-CAM computed request by request."""
    model = tiny_cnn(10, 8, seed=1)
    weights = torch.zeros(8, 8)  # the 8×8 grid of "features" for 16×16 inputs
    weights[:3, :3] = 1.0
    shifted = ShiftedModel(model, "features", RegionShift(0.5, weights), head_dtype)
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    out = explain(shifted, x, "features", [GradCAM()], SCORES, classes=[3, 5], batched=batched)
    assert len(out.maps) == 3 * len(SCORES) * 2
    p = forward_pass(shifted, x, ["features"])
    for (slot, _method, score, variant), maps in out.maps.items():
        want = GradCAM().from_pass(p, "features", out.targets[slot], score, variant)
        torch.testing.assert_close(maps, want, rtol=1e-5, atol=1e-6)
    # the shift steers the logit map and leaves the immune scores alone
    assert not torch.allclose(out.maps[(0, "gradcam", "logit", "original")], out.maps[(0, "gradcam", "logit", "shifted")])
    torch.testing.assert_close(
        out.maps[(0, "gradcam", "centered", "original")], out.maps[(0, "gradcam", "centered", "shifted")], rtol=1e-4, atol=1e-6
    )


def test_engine_serves_every_method(tiny_cnn):
    """Every registered method through the engine equals the method's own ``maps`` (CAMs and saliency /
    gradient × input from the shared pass, IG and SmoothGrad from their own passes)."""
    shifted = ShiftedModel(tiny_cnn(10, 8, seed=5), "features", PaperShift(1.0))
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    options = {"ig": {"steps": 4}, "smoothgrad": {"samples": 3}}
    methods = [get_method(name, **options.get(name, {})) for name in METHODS]
    out = explain(shifted, x, "features", methods, ["logit", "centered"], classes=[2])
    assert len(out.maps) == len(METHODS) * 2 * 2 * 2
    for (slot, name, score, variant), maps in out.maps.items():
        m = next(m for m in methods if m.name == name)
        want = m.maps(shifted, x, out.targets[slot], score, variant, "features" if m.family == "cam" else None)
        torch.testing.assert_close(maps, want, rtol=1e-5, atol=1e-7)


def test_engine_batched_equals_loop(tiny_cnn):
    """The vmapped backward gives the per-request backward's numbers (paper shift)."""
    shifted = ShiftedModel(tiny_cnn(10, 8, seed=3), "features", PaperShift(2.0))
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    a = explain(shifted, x, "features", [GradCAM()], SCORES, batched=True)
    b = explain(shifted, x, "features", [GradCAM()], SCORES, batched=False)
    for key in a.maps:
        torch.testing.assert_close(a.maps[key], b.maps[key], rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------- the command


def test_bad_files_are_listed_and_the_rest_evaluated(workspace, reference):
    summary, rows = reference
    bad = {Path(b["image"]).name: b["reason"] for b in summary["bad_images"]}
    assert set(bad) == set(BAD)
    for name, reason in BAD.items():
        assert reason in bad[name] and name in bad[name]
    assert summary["images"] == {"listed": GOOD + len(BAD), "evaluated": GOOD, "bad": len(BAD), "missing": 0, "skipped_non_images": 1}
    assert summary["complete"] is True
    evaluated = {r["image"] for r in rows}
    assert len(evaluated) == GOOD and not any(Path(i).name in BAD for i in evaluated)
    # one row per (image, class, method, score, variant): top-1 plus the extra classes unless one is the top-1
    per_image = {}
    for r in rows:
        per_image.setdefault(r["image"], set()).add(r["class"])
    assert sum(len(c) for c in per_image.values()) * len(SCORES) * 2 == len(rows) == summary["rows"]
    assert all(len(c) in (2, 3) and {3, 7} <= c for c in per_image.values())
    # equivalence: both variants agree on the top-1, the probabilities barely move
    assert summary["equivalence"]["top1_agree"] == 1.0 and summary["equivalence"]["max_abs_prob_diff"] <= 1e-5
    # immune scores are untouched, the logit is steered (Spearman 1 only on immune rows)
    immune = [r for r in rows if r["variant"] == "shifted" and r["score"] != "logit"]
    assert min(r["spearman_vs_original"] for r in immune) > 0.99
    logit = [r["spearman_vs_original"] for r in rows if r["variant"] == "shifted" and r["score"] == "logit"]
    assert sum(logit) / len(logit) < 0.9


def test_outputs_and_cli_guards(workspace, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(cli_args(workspace, out, "--workers", "1")) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows"] == len((out / "rows.csv").read_text().splitlines()) - 1
    assert "## Unreadable images" in (out / "summary.md").read_text()
    capsys.readouterr()
    # a second run into the same folder without --resume/--force is refused, nothing lost
    assert main(cli_args(workspace, out)) == 2
    assert "--resume" in capsys.readouterr().err
    assert len(rows_of(out)) == summary["rows"]
    # resuming with other settings is refused
    assert main(cli_args(workspace, out, "--resume", "--strength", "0.3")) == 2
    assert "strength" in capsys.readouterr().err


def test_sigkill_at_random_points_then_resume(workspace, reference, tmp_path):
    """Kill the command with SIGKILL at random moments (≥ 5 times), resume: exactly the uninterrupted rows."""
    _, want = reference
    out = tmp_path / "killed"
    store = out / "results.sqlite"
    total = GOOD + len(BAD)
    rng = random.Random(int(os.environ.get("LOGITSHIFT_TEST_SEED", "5")))
    cmd = [sys.executable, "-m", "logitshift.cli", *cli_args(workspace, out, "--resume", "--workers", "1")]

    def finished() -> int:
        if not store.exists():
            return 0
        try:
            with sqlite3.connect(store, timeout=10) as conn:
                return int(conn.execute("SELECT COUNT(*) FROM images").fetchone()[0])
        except sqlite3.OperationalError:  # tables not created yet
            return 0

    kills, mid_run = 0, 0
    for _round in range(10):
        if kills >= 5:
            break
        before = finished()
        goal = min(before + rng.randint(0, 6), total - 1)  # kill once this many images are committed …
        proc = subprocess.Popen(cmd, env=sub_env(workspace), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + 120
        while proc.poll() is None and finished() < goal and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.03))  # … plus a random delay: mid-batch, mid-commit, mid-summary
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            kills += 1
            proc.wait()
            mid_run += 0 < finished() < total
        else:
            assert proc.returncode == 0, proc.stderr.read().decode()[-2000:]
        proc.stderr.close()
    assert kills >= 5
    assert mid_run >= 3, "too few kills landed while images were being evaluated"
    summary = run_evaluate(config(workspace, out, resume=True))
    got = rows_of(out)
    assert_same_rows(got, want)  # same batches, same process settings: bit-identical rows
    assert summary["complete"] and summary["rows"] == len(want)
    with Store(store) as st:
        images = st.images()
    assert len(images) == total == len({i["image"] for i in images})


def test_torchrun_two_ranks_match_single_process(workspace, reference, tmp_path):
    """``torchrun --nproc_per_node 2`` shards batches across two gloo ranks; the merged store has the same rows."""
    _, want = reference
    out = tmp_path / "dist"
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "logitshift.cli", *cli_args(workspace, out, "--workers", "1")]
    done = subprocess.run(cmd, env=sub_env(workspace), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (out / "parts").exists()
    with Store(out / "results.sqlite") as st:
        ranks = {i["rank"] for i in st.images()}
    assert ranks == {0, 1}
    # rank threads differ from this process's (torchrun sets OMP_NUM_THREADS=1): floats within 1e-6
    assert_same_rows(rows_of(out), want, tol=1e-6)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["complete"] and len(summary["bad_images"]) == len(BAD)


def test_channels_last_gives_the_same_rows(workspace, reference, tmp_path):
    """``--channels-last`` (issue 16: the layout that pays for itself on CPU) changes only float rounding."""
    out = tmp_path / "cl"
    summary = run_evaluate(config(workspace, out, channels_last=True))
    assert summary is not None and summary["complete"] is True
    got, want = rows_of(out), reference[1]
    assert [tuple(r[k] for k in KEY) for r in got] == [tuple(r[k] for k in KEY) for r in want]
    for r, w in zip(got, want):
        for field, value in w.items():
            if isinstance(value, float):
                # a rank correlation of two near-identical 16×16 maps moves with rounding near ties
                assert abs(r[field] - value) <= (1e-2 if field.startswith("spearman") else 1e-4), (field, r, w)
            else:
                assert r[field] == value, (field, r, w)


def test_resume_of_a_finished_run_does_no_model_work(workspace, reference, tmp_path, monkeypatch):
    """Issue 30: --resume with nothing left returns the recorded summary: no model loaded, no strength chosen, nothing redrawn."""
    import logitshift.runs.evaluate as evaluate

    out = tmp_path / "run"
    run_evaluate(config(workspace, out))
    before = (out / "summary.json").stat().st_mtime_ns

    def no_model(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(evaluate, "prepare", no_model)
    summary = run_evaluate(config(workspace, out, resume=True))
    assert summary["complete"] and summary["rows"] == len(reference[1])
    assert (out / "summary.json").stat().st_mtime_ns == before
    # a changed setting is not "nothing left": the full resume decides (and refuses a changed method)
    with pytest.raises(AssertionError, match="a model was loaded"):
        run_evaluate(config(workspace, out, resume=True, methods=["hirescam"]))
