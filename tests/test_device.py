"""``--device auto|cpu|cuda`` on every command that runs a model.

No GPU here: the tests check the flag's parsing and validation, that ``cuda``
without a CUDA device is a one-line error with exit code 2 before anything is
written, and (``test_matrix.py``) that ``--device cpu`` runs end to end.
CUDA is reported absent by monkeypatching, so the tests mean the same on a
machine that has one.
"""

from __future__ import annotations

import argparse

import pytest
import torch

from logitshift import LogitShiftError
from logitshift.cli import build_parser, main
from logitshift.core.device import model_device, resolve_device

#: the commands that run a model (``report`` only renders a run folder)
MODEL_COMMANDS = ("demo", "attack", "matrix", "audit", "evaluate")


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_resolve_device(no_cuda):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(LogitShiftError, match=r"^--device cuda: no CUDA device is available") as err:
        resolve_device("cuda")
    assert "\n" not in str(err.value)
    with pytest.raises(LogitShiftError, match="--device 'tpu': expected one of auto, cpu, cuda"):
        resolve_device("tpu")


def test_auto_picks_cuda_when_there_is_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto", 1) == torch.device("cuda", 1)


def test_model_device():
    assert model_device(torch.nn.Linear(2, 2)) == torch.device("cpu")
    assert model_device(torch.nn.ReLU()) == torch.device("cpu")


@pytest.mark.parametrize("command", MODEL_COMMANDS)
def test_every_model_command_takes_device(command):
    parser = subcommands()[command]
    flag = next(a for a in parser._actions if "--device" in a.option_strings)
    assert tuple(flag.choices) == ("auto", "cpu", "cuda") and flag.default == "auto"


def test_the_command_list_is_complete():
    """A new command that loads a model must take --device too (update MODEL_COMMANDS when adding one)."""
    without = {name for name, p in subcommands().items() if not any("--device" in a.option_strings for a in p._actions)}
    assert without <= {"report", "check"}, without


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--out", "{out}"],
        ["attack", "--target", "top-left", "--out", "{out}/shifted.pt2"],
        ["matrix", "--out", "{out}"],
        ["audit", "efficientnet-lite0", "--out", "{out}"],
        ["evaluate", "chelsea", "--out", "{out}"],
    ],
    ids=lambda a: a[0],
)
def test_cuda_without_a_gpu_is_a_one_line_error(no_cuda, tmp_path, capsys, argv):
    out = tmp_path / "out"
    code = main([a.replace("{out}", str(out)) for a in argv] + ["--device", "cuda"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "--device cuda: no CUDA device is available" in err, err
    assert not out.exists()  # refused before anything was written


def test_unknown_device_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["matrix", "--device", "tpu"])
    assert exit_.value.code == 2
    assert "--device" in capsys.readouterr().err
