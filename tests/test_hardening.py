"""Issue 7: untrusted files, numerical limits, the command line, interrupted work."""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logitshift.attribution import GradCAM, normalize
from logitshift.cli import build_parser, main
from logitshift.core.errors import LogitShiftError
from logitshift.core.metrics import spearman, target_mass
from logitshift.core.models import load_state_dict
from logitshift.core.targets import parse_target
from logitshift.shift.steer import shift_model


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "weights.pth"
    with open(evil, "wb") as fh:
        pickle.dump({"w": _Evil(str(marker))}, fh)
    with pytest.raises(LogitShiftError, match=r"weights file .*weights.pth.*cannot be loaded safely"):
        load_state_dict(evil)
    assert not marker.exists()


def test_the_cli_refuses_the_planted_pickle(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "weights.pth"
    torch.save({"w": _Evil(str(marker))}, evil)
    assert main(["demo", "--out", str(tmp_path / "o"), "--weights", str(evil), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be loaded safely" in err[0]
    assert not marker.exists()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_and_infinite_inputs_are_refused(tiny_cnn, bad):
    model = tiny_cnn()
    x = torch.randn(2, 3, 16, 16)
    x[1, 0, 3, 3] = bad
    with pytest.raises(LogitShiftError, match="input: 1 NaN or infinite values"):
        GradCAM().maps(model, x, torch.tensor([0, 1]), layer="features")
    with pytest.raises(LogitShiftError, match="check images: 1 NaN"):
        shift_model(model, "features", "paper", 1.0, check=x)


def test_strength_that_breaks_float32_is_refused_with_the_measured_value(tiny_cnn):
    model = tiny_cnn(width=16)
    x = torch.randn(4, 3, 16, 16)
    with pytest.raises(LogitShiftError, match=r"up to \d\.\d\de[-+]\d\d .*float64 head"):
        shift_model(model, "features", "paper", 1e9, check=x)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_models_need_a_wide_head(tiny_cnn, dtype):
    """Adding t in float16/bfloat16 rounds to |t|·2^-11 (2^-8): refused; a float64 head is exact."""
    model = tiny_cnn(width=16).to(dtype)
    x = torch.randn(4, 3, 16, 16, dtype=dtype)
    with pytest.raises(LogitShiftError, match="float64 head"):
        shift_model(model, "features", "paper", 50.0, check=x)
    shifted = shift_model(model, "features", "paper", 50.0, check=x, head_dtype=torch.float64)
    with torch.no_grad():
        p = torch.softmax(model(x).double(), 1)
        q = torch.softmax(shifted(x), 1)
    assert (p - q).abs().max() <= 1e-5
    maps = GradCAM().maps(shifted, x, torch.zeros(4, dtype=torch.long), "prob", "shifted", "features")
    assert torch.isfinite(maps).all()


def test_all_zero_maps_have_a_stated_convention():
    zeros = torch.zeros(2, 7, 7)
    assert torch.equal(normalize(zeros), zeros)  # no division by zero
    assert torch.equal(target_mass(zeros, torch.ones(7, 7)), torch.zeros(2, dtype=torch.float64))
    assert spearman(zeros, zeros).tolist() == [1.0, 1.0]
    assert spearman(zeros, torch.randn(2, 7, 7)).tolist() == [0.0, 0.0]


def test_every_command_has_help_with_an_example(capsys):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # noqa: SLF001
    assert "demo" in commands
    for name in commands:
        with pytest.raises(SystemExit) as exit_:
            main([name, "--help"])
        assert exit_.value.code == 0
        assert "example" in capsys.readouterr().out.lower(), name


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(LogitShiftError):
        main(["--debug", "demo", "--out", str(tmp_path / "o"), "--layer", "nope", "--no-progress"])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    argv=st.lists(
        st.sampled_from(
            [
                "demo",
                "--strength",
                "-1",
                "0",
                "nan",
                "1e3",
                "--tolerance",
                "x",
                "--construction",
                "paper",
                "banana",
                "--region",
                "--class",
                "--images",
                "--out",
                "--force",
                "--float64-head",
                "-h2",
                "--no-such-flag",
                "audit",
                "matrix",
                "report",
                "",
            ]
        ),
        max_size=6,
    )
)
def test_fuzz_the_command_line_parser(argv, capsys):
    """Any argument list either parses or exits 2 with one line; nothing else escapes."""
    parser = build_parser()
    try:
        parser.parse_args(argv)
    except SystemExit as exit_:
        err = capsys.readouterr().err.strip()
        if exit_.code == 0:  # --help
            return
        assert exit_.code == 2
        assert len(err.splitlines()) == 1, err


@settings(max_examples=200, deadline=None)
@given(
    spec=st.one_of(
        st.text(max_size=30),
        st.builds(lambda a, b, c, d: f"{a},{b},{c},{d}", *[st.integers(-300, 300)] * 4),
        st.builds(lambda a, b, c, d: f"cells:{a},{b},{c},{d}", *[st.integers(-3, 10)] * 4),
    )
)
def test_fuzz_the_region_parser(spec):
    try:
        target = parse_target(spec, 224, (7, 7))
    except LogitShiftError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("region ")
    else:
        assert target.mask.shape == (224, 224)
        assert 0 < float(target.mask.sum()) <= 224 * 224


def test_a_killed_demo_leaves_no_half_written_file(tmp_path):
    """SIGKILL at random moments: every file under its real name is complete, and a rerun succeeds."""
    out = tmp_path / "run"
    rng = random.Random(7)
    cmd = [sys.executable, "-m", "logitshift", "demo", "--out", str(out), "--force", "--no-progress", "--class", "maze"]
    for _ in range(3):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(4.0, 9.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for path in out.glob("*"):
            if path.name.startswith("."):
                continue  # temporary files of the killed writer
            data = path.read_bytes()
            if path.suffix == ".png":
                assert data.startswith(b"\x89PNG") and data.endswith(b"IEND\xaeB`\x82"), path
            elif path.suffix == ".json":
                json.loads(data)
    done = subprocess.run(cmd, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert not list(out.glob(".*.tmp*"))
    assert len(json.loads((out / "summary.json").read_text())["results"]) == 8


# ----------------------------------------------------------------------------- issue 24: a second look


def test_a_raw_pickle_as_weights_gives_one_line(tmp_path, tiny_cnn):
    """``pickle.dump(model)`` (protocol 4): torch warns about the protocol on stderr before refusing it (live below);
    the command still says one line."""
    legacy = tmp_path / "legacy.pth"
    with open(legacy, "wb") as fh:
        pickle.dump(tiny_cnn(), fh)
    probe = f"import torch\ntry:\n    torch.load({str(legacy)!r}, weights_only=True)\nexcept Exception:\n    pass\n"
    live = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert "Warning" in live.stderr  # the warning that broke the one line
    run = subprocess.run(
        [sys.executable, "-m", "logitshift", "audit", "--model", "resnet18", "--weights", str(legacy), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    err = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(err) == 1 and "pickled Python objects" in err[0], run.stderr


ZERO_HEAD = "ls_zero_head_mod"


@pytest.fixture
def zero_head(tmp_path, monkeypatch, tiny_cnn):
    """A factory ``ls_zero_head_mod:zero`` giving the tiny CNN with a zero classifier head (constant logits), as
    torchvision's ``vit_b_16(weights=None)`` is."""
    (tmp_path / f"{ZERO_HEAD}.py").write_text(
        "import sys, torch\n"
        f"sys.path.insert(0, {str(os.path.dirname(__file__))!r})\n"
        "from conftest import TinyCNN\n"
        "from logitshift.core.models import LoadedModel, Preprocess\n"
        "def zero():\n"
        "    m = TinyCNN(10, 8, 0)\n"
        "    with torch.no_grad():\n"
        "        m.fc.weight.zero_(); m.fc.bias.zero_()\n"
        "    return LoadedModel(m, 'zero', 'features', Preprocess(size=32, resize=32), num_classes=10)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield f"{ZERO_HEAD}:zero"
    sys.modules.pop(ZERO_HEAD, None)


@pytest.mark.parametrize("command", ["attack", "demo", "audit"])
def test_a_zero_head_is_refused_naming_the_likely_cause(zero_head, tmp_path, capsys, command):
    """Constant logits: every logit-gradient map of the model is zero (live below), so steering or auditing it says
    nothing; each command refuses it in one line that names a zero or untrained head."""
    import importlib

    loaded = importlib.import_module(ZERO_HEAD).zero()
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    (grad,) = torch.autograd.grad(loaded.module(x)[:, 3].sum(), x)
    assert float(grad.abs().max()) == 0.0  # live: nothing to explain
    argv = {
        "attack": ["attack", "--model", zero_head, "--target", "0,0", "--out", str(tmp_path / "z.pt2"), "--no-progress"],
        "demo": ["demo", "--model", zero_head, "--out", str(tmp_path / "d"), "--no-progress"],
        "audit": ["audit", "--model", zero_head, "--no-progress"],
    }[command]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "do not vary across the" in err[0] and "zero or untrained classifier head" in err[0], err
    assert not (tmp_path / "z.pt2").exists() and not (tmp_path / "d").exists()


def test_non_finite_logits_are_nothing_concluded(tmp_path, capsys, monkeypatch, tiny_cnn):
    """A model whose logits are NaN: the old audit said ``clean``, exit 0 (every statistic NaN, no test fired)."""
    (tmp_path / "ls_nan_mod.py").write_text(
        "import sys, torch\n"
        f"sys.path.insert(0, {str(os.path.dirname(__file__))!r})\n"
        "from conftest import TinyCNN\n"
        "from logitshift.core.models import LoadedModel, Preprocess\n"
        "class NaNHead(TinyCNN):\n"
        "    def forward(self, x):\n"
        "        return super().forward(x) * float('nan')\n"
        "def nan():\n"
        "    return LoadedModel(NaNHead(10, 8, 0), 'nan', 'features', Preprocess(size=32, resize=32), num_classes=10)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["audit", "--model", "ls_nan_mod:nan", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "logits are NaN or infinite on 4 of the 4 images; nothing concluded" in err[0], err


@pytest.mark.parametrize("named", ["../secret.safetensors", "/tmp/secret.safetensors", "sub/secret.safetensors", "link.safetensors"])
def test_a_shift_file_cannot_name_tensors_outside_its_folder(tmp_path, named):
    """A ``.json`` sent with a ``.safetensors`` names where its tensors are: joined the old way, ``../secret`` reads a
    file outside the folder (live below); now only a plain file name beside the JSON is read."""
    from safetensors.torch import load_file, save_file

    from logitshift.shift.save import FORMAT, VERSION, load_shifted

    secret = tmp_path / "secret.safetensors"
    save_file({"key": torch.arange(3.0)}, str(secret))
    folder = tmp_path / "sent"
    (folder / "sub").mkdir(parents=True)
    (folder / "link.safetensors").symlink_to(secret)
    jpath = folder / "shifted.json"
    jpath.write_text(json.dumps({"format": FORMAT, "version": VERSION, "tensors": named, "model": "x", "terms": []}))
    if named.startswith(".."):
        assert torch.equal(load_file(str(jpath.parent / named))["key"], torch.arange(3.0))  # live: the old join reads it
    with pytest.raises(LogitShiftError, match=r"expected a file name beside it|is a symbolic link"):
        load_shifted(jpath)
