"""The command line's one vocabulary (issue 12): every command spells and explains the shared flags the same way.

In-process and fast: the parsers are built and their help walked, no model is run except a tiny one.
"""

from __future__ import annotations

import argparse
import sys
import textwrap

import pytest

from logitshift import LogitShiftError
from logitshift.cli import SHARED, build_parser, main

#: which shared flags each command has (a flag that means nothing for a command is absent)
EVERY = {"--debug", "--version"}
MODEL = {"--model", "--weights", "--layer", "--images", "--out", "--force", "--device"}
EXPECTED = {
    "demo": EVERY | MODEL | {"--target", "--class", "--top-k", "--labels", "--report"},
    "attack": EVERY | MODEL | {"--target"},
    "matrix": EVERY | MODEL | {"--target", "--report"},
    "audit": EVERY | MODEL | {"--report"},
    "evaluate": EVERY | MODEL | {"--target", "--class", "--top-k", "--labels", "--report"},
    "report": EVERY | {"--out"},
    "check": EVERY | (MODEL - {"--device"}) | {"--target"},
}
#: old spellings that still parse, hidden from --help: (command, argv, attribute, value)
ALIASES = [
    ("demo", ["--region", "bottom-right"], "target", "bottom-right"),
    ("evaluate", ["--region", "bottom-right"], "target", "bottom-right"),
    ("evaluate", ["chelsea", "coffee"], "images_arg", ["chelsea", "coffee"]),
    ("evaluate", ["--list", "l.txt"], "lists", ["l.txt"]),
    ("evaluate", ["--ig-steps", "3"], "ig_steps", 3),
    ("evaluate", ["--smoothgrad-samples", "3"], "smoothgrad_samples", 3),
    ("audit", ["m.pt2"], "model_arg", "m.pt2"),
    ("audit", ["--layers", "a", "b"], "layers", ["a", "b"]),
    ("check", ["--samples", "3"], "steps", 3),
]


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def options(p: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in p._actions for s in a.option_strings}


def test_every_command_is_listed():
    assert set(subcommands()) == set(EXPECTED)


@pytest.mark.parametrize("command", sorted(EXPECTED))
def test_shared_flags_are_there_with_the_same_help(command, capsys):
    p = subcommands()[command]
    opts = options(p)
    shared = {f for f in opts if f in SHARED}
    assert shared == EXPECTED[command], f"{command}: missing {EXPECTED[command] - shared}, unexpected {shared - EXPECTED[command]}"
    for flag in shared:
        assert opts[flag].help.startswith(SHARED[flag]), f"{command} {flag}: {opts[flag].help!r}"
    # the help the user reads: every shared flag listed, no hidden alias
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for flag in shared:
        assert f"{flag} " in text or text.endswith(flag), (command, flag)
        assert " ".join(SHARED[flag].split()) in text, (command, flag)


@pytest.mark.parametrize("command", sorted(EXPECTED))
def test_shared_flags_mean_the_same_thing(command):
    opts = options(subcommands()[command])
    for flag in ("--force", "--report"):
        if flag in opts:
            assert isinstance(opts[flag], argparse._StoreTrueAction), (command, flag)
    if "--device" in opts:
        assert tuple(opts["--device"].choices) == ("auto", "cpu", "cuda") and opts["--device"].default == "auto"
    if "--images" in opts:
        assert opts["--images"].nargs == "+" and opts["--images"].dest == "images"
    if "--class" in opts:
        assert isinstance(opts["--class"], argparse._AppendAction) and opts["--class"].dest == "classes"
    for flag in ("--model", "--weights", "--target", "--out"):
        if flag in opts:
            assert opts[flag].dest == flag[2:] and opts[flag].nargs is None, (command, flag)
    # the model commands default to the same model
    if "--model" in opts and command != "audit":
        assert opts["--model"].default == "efficientnet-lite0"


@pytest.mark.parametrize("command, argv, attribute, value", ALIASES)
def test_old_spellings_parse_but_are_hidden(command, argv, attribute, value):
    parser = build_parser()
    required = {"attack": ["--target", "top-left", "--out", "x.pt2"], "report": ["run"]}.get(command, [])
    args = parser.parse_args([command, *required, *argv])
    assert getattr(args, attribute) == value
    flag = argv[0]
    if flag.startswith("--"):
        action = options(subcommands()[command])[flag]
        assert action.help == argparse.SUPPRESS
        assert f"{flag} is an old spelling of --" in subcommands()[command].epilog


def test_debug_is_accepted_before_and_after_the_command(tmp_path, capsys):
    missing = str(tmp_path / "no-run")
    assert main(["report", missing]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    for argv in (["--debug", "report", missing], ["report", missing, "--debug"], ["report", "--debug", missing]):
        with pytest.raises(LogitShiftError):
            main(argv)


def test_version_after_the_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["audit", "--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("logitshift ")


FACTORY = """
    import torch
    from torch import nn
    from logitshift.core.models import LoadedModel, Preprocess

    def tiny():
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
        return LoadedModel(net.eval(), "tiny", "1", Preprocess(size=32, resize=32), 5)
"""


def test_model_factory_is_found_in_the_current_folder(tmp_path, monkeypatch, capsys):
    (tmp_path / "cwd_models_i12.py").write_text(textwrap.dedent(FACTORY))
    monkeypatch.chdir(tmp_path)
    # as the console script runs: neither the current folder nor "" on sys.path
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "cwd_models_i12", raising=False)
    code = main(
        ["demo", "--model", "cwd_models_i12:tiny", "--images", "chelsea", "--out", "run", "--no-progress", "--device", "cpu", "--goal", "0"]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "figures and summary.json in run" in out.out


def test_a_reader_that_goes_away_ends_the_command_quietly(monkeypatch, capsys):
    """`logitshift audit … | head -1`: the closed pipe is no error to report, and the exit code is 141 (128 + SIGPIPE),
    never audit's 1 ("shifted") or 2 (bad input)."""
    import logitshift.cli.audit as cli_audit

    def run(args):
        print("the finding")
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli_audit, "run", run)
    assert main(["audit", "--model", "efficientnet-lite0"]) == 141
    assert capsys.readouterr().err == ""


def test_a_real_closed_pipe_leaves_no_message(tmp_path):
    """The same through a real pipe: the reader takes one line and closes it; nothing on stderr."""
    import subprocess

    script = (
        "import sys; import logitshift.cli.audit as a\n"
        "def run(args):\n"
        "    for i in range(100000): print('line', i)\n"
        "    return 0\n"
        "a.run = run\n"
        "from logitshift.cli import main; sys.exit(main(['audit', '--model', 'x']))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"line 0\n"
    proc.stdout.close()
    err = proc.stderr.read() if proc.stderr is not None else b""
    assert proc.wait(timeout=60) == 141 and err == b"", err
