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
from logitshift.cli.flags import SAME_EVERYWHERE

#: which shared flags each command has (a flag that means nothing for a command is absent)
EVERY = {"--debug", "--version"}
MODEL = {"--model", "--weights", "--random-weights", "--num-classes", "--classes", "--layer", "--images", "--out", "--force", "--device"}
SHIFT = {"--target", "--methods", "--strength", "--goal", "--no-progress"}
CLASSES = {"--class", "--top-k", "--labels"}
SAMPLING = {"--steps", "--memory-budget"}
EXPECTED = {
    "demo": EVERY | MODEL | SHIFT | CLASSES | {"--report", "--tolerance", "--float64-head", "--steps"},  # --steps: demo --texts (IG)
    "attack": EVERY | MODEL | SHIFT | SAMPLING | {"--tolerance", "--float64-head"},
    "matrix": EVERY | MODEL | SHIFT | SAMPLING | {"--report", "--no-figures"},
    "audit": EVERY | MODEL | CLASSES | {"--report", "--methods", "--no-progress"},  # CLASSES: issue 25, the classes users explain
    "evaluate": EVERY | MODEL | SHIFT | CLASSES | SAMPLING | {"--report", "--tolerance", "--float64-head", "--no-figures"},
    "report": EVERY | {"--out", "--force"},
    "check": EVERY | (MODEL - {"--device"}) | {"--target", "--steps", "--tolerance", "--no-progress"},
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
    ("check", ["--strength", "3"], "twin_strength", 3.0),
    ("demo", ["--method", "grad-cam++"], "methods", ["gradcampp"]),
    ("matrix", ["--no-figure"], "no_figures", True),
    ("evaluate", ["--no-plots"], "no_figures", True),
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
    shared = {f for f, a in opts.items() if f in SHARED and a.help != argparse.SUPPRESS}  # hidden: an old spelling
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


def test_one_help_text_per_shared_flag():
    """Issue 30: a shared flag says the same words in every command; --methods may add only its default."""
    texts: dict[str, set[str]] = {}
    for command, p in subcommands().items():
        for flag, action in options(p).items():
            if action.help == argparse.SUPPRESS:
                continue
            if flag in SAME_EVERYWHERE:
                texts.setdefault(flag, set()).add(action.help)
                assert action.help == SHARED[flag], (command, flag, action.help)
            elif flag == "--methods":
                assert action.help.startswith(SHARED[flag] + " (default: "), (command, action.help)
    assert {f: len(t) for f, t in texts.items()} == dict.fromkeys(texts, 1)
    assert {"--goal", "--strength", "--steps", "--no-figures", "--memory-budget", "--random-weights"} <= set(texts)


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
    # one default per flag, one parser per flag
    defaults = {"--steps": 16, "--goal": 0.5, "--strength": None, "--tolerance": 1e-5, "--no-figures": False, "--random-weights": False}
    for flag, default in defaults.items():
        if flag in opts:
            assert opts[flag].default == default, (command, flag, opts[flag].default)
    if "--methods" in opts:
        assert opts["--methods"].nargs == "+" and opts["--methods"].type("Grad-CAM++") == "gradcampp"


def test_method_spellings_and_did_you_mean():
    parser = build_parser()
    assert parser.parse_args(["matrix", "--methods", "grad-cam", "gradcam++", "IG"]).methods == ["gradcam", "gradcampp", "ig"]
    with pytest.raises(SystemExit):
        parser.parse_args(["matrix", "--methods", "gradcan"])


def test_demo_draws_one_method(capsys):
    assert main(["demo", "--methods", "gradcam", "hirescam", "--out", "x"]) == 2
    assert "demo draws one CAM method" in capsys.readouterr().err


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


NO_TORCH = (
    "import sys\n"
    "from logitshift.cli import main\n"
    "try:\n"
    "    main(sys.argv[1:])\n"
    "except SystemExit as e:\n"
    "    code = e.code\n"
    "heavy = [m for m in ('torch', 'numpy', 'matplotlib', 'PIL') if m in sys.modules]\n"
    "print('imported:', ' '.join(heavy) or 'nothing heavy')\n"
)


@pytest.mark.parametrize(
    "argv", [["--help"], ["--version"], ["demo", "--help"], ["matrix", "--help"], ["audit", "--help"], ["demo", "--modle", "x"]]
)
def test_the_command_line_answers_before_importing_torch(argv):
    """Issue 30: --help, --version and a misspelt flag parse before torch and friends are imported."""
    import subprocess

    proc = subprocess.run([sys.executable, "-c", NO_TORCH, *argv], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip().splitlines()[-1] == "imported: nothing heavy", (argv, proc.stdout[-500:], proc.stderr[-500:])


def test_the_names_shown_before_torch_are_the_registry_s():
    """core/names.py (read by --help) names exactly the methods the registry holds, family by family."""
    from logitshift.attribution import ATTENTION_METHODS, CAM_METHODS, INPUT_METHODS, METHODS
    from logitshift.core import names

    assert names.CAM_NAMES == CAM_METHODS and names.INPUT_NAMES == INPUT_METHODS
    assert names.METHOD_NAMES == tuple(METHODS) and names.ATTENTION_NAMES == tuple(ATTENTION_METHODS)


def test_import_logitshift_is_lazy_but_complete():
    """``import logitshift`` imports no torch, and every name of ``__all__`` is there on first use."""
    import subprocess

    script = "import sys, logitshift\nassert 'torch' not in sys.modules\nfor n in logitshift.__all__: getattr(logitshift, n)\nprint('ok')"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip() == "ok", proc.stderr[-800:]


def test_report_refuses_a_photo_folder_and_overwrites_only_with_force(tmp_path, capsys):
    from PIL import Image

    from logitshift.core.files import RUN_STAMP

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(photos / "cat.png")
    assert main(["report", str(photos)]) == 2
    assert "holds no logitshift run" in capsys.readouterr().err
    assert not (photos / "report.html").exists()
    # a killed run's folder (stamped, figures, no record yet) still gets its page; a second page needs --force
    run = tmp_path / "run"
    run.mkdir()
    Image.new("RGB", (16, 16)).save(run / "chelsea_285.png")
    (run / RUN_STAMP).touch()
    assert main(["report", str(run)]) == 0
    first = (run / "report.html").stat().st_mtime_ns
    assert main(["report", str(run)]) == 2
    assert "pass --force" in capsys.readouterr().err and (run / "report.html").stat().st_mtime_ns == first
    assert main(["report", str(run), "--force"]) == 0


EXPLAINER = """
    import torch

    def grad_maps(model, x, classes):
        x = x.detach().clone().requires_grad_(True)
        z = model(x)
        z.gather(1, torch.as_tensor(classes).view(-1, 1)).sum().backward()
        return x.grad.abs().amax(dim=1)
"""


def test_check_finds_an_explainer_in_the_current_folder(tmp_path, monkeypatch, capsys):
    """Issue 30: every ``pkg.module:name`` spec is looked up in the current folder too (check's EXPLAINER as --model)."""
    (tmp_path / "cwd_models_i30.py").write_text(textwrap.dedent(FACTORY))
    (tmp_path / "cwd_explain_i30.py").write_text(textwrap.dedent(EXPLAINER))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    for name in ("cwd_models_i30", "cwd_explain_i30"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    argv = ["check", "cwd_explain_i30:grad_maps", "--model", "cwd_models_i30:tiny", "--kinds", "gradient", "--no-progress"]
    code = main(argv)
    out = capsys.readouterr()
    assert code in (0, 1), out.err
    assert "cwd_explain_i30:grad_maps" in out.out and "cannot import" not in out.err


def test_audit_num_classes_on_a_ten_class_checkpoint(tmp_path, capsys):
    """A fine-tuned 10-class resnet18 checkpoint: without --num-classes the error names the flag and the size; with it, audited."""
    import torch
    import torchvision

    torch.manual_seed(0)
    ckpt = tmp_path / "r18_10.pth"
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), ckpt)
    base = ["audit", "--model", "resnet18", "--weights", str(ckpt), "--images", "chelsea", "--max-layers", "1", "--probes", "1"]
    assert main([*base, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--num-classes 10" in err and len(err.strip().splitlines()) == 1
    code = main([*base, "--num-classes", "10", "--no-progress"])
    out = capsys.readouterr()
    assert code in (0, 1), out.err
    assert "verdict:" in out.out


def test_did_you_mean(capsys):
    """Issue 30: a misspelt flag, model, method or class gets the names that are close, a word inside a name first."""
    from logitshift.core.classes import resolve_class
    from logitshift.core.names import did_you_mean

    with pytest.raises(SystemExit):
        main(["demo", "--modle", "resnet18"])
    assert "did you mean '--model'" in capsys.readouterr().err
    with pytest.raises(LogitShiftError) as err:
        resolve_class("cat")
    close = str(err.value).split("did you mean ")[1]
    assert "cat'" in close.split(" or ")[0] and "crate" not in close  # 'tiger cat', 'Persian cat'… before crate
    assert did_you_mean("resnt18", ["alexnet", "resnet18", "resnet34", "vgg11"])[0] == "resnet18"
    with pytest.raises(SystemExit):
        main(["matrix", "--methods", "gradcamm"])
    assert "did you mean 'gradcam'" in capsys.readouterr().err


def test_files_written_through_a_writer_get_the_umask_mode(tmp_path):
    """shifted.safetensors was 0600: safetensors' save_file makes its own file; the finished file follows the umask."""
    import os

    import torch
    from safetensors.torch import save_file

    from logitshift.core.files import atomic_write, umask_mode

    path = atomic_write(tmp_path / "t.safetensors", lambda tmp: save_file({"a": torch.zeros(2)}, tmp))
    assert os.stat(path).st_mode & 0o777 == umask_mode()


def test_progress_off_a_terminal_is_one_line_per_stage(tmp_path):
    """Issue 30: stderr that is not a terminal (a log) gets no ``\\r`` bars: one line per stage, each written once."""
    import subprocess

    (tmp_path / "cwd_models_p30.py").write_text(textwrap.dedent(FACTORY))
    argv = ["demo", "--model", "cwd_models_p30:tiny", "--images", "chelsea", "--out", "run", "--device", "cpu", "--goal", "0"]
    proc = subprocess.run([sys.executable, "-m", "logitshift", *argv], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-1000:]
    assert "\r" not in proc.stderr
    stages = [line for line in proc.stderr.splitlines() if line.split(":")[0] in ("demo", "maps") or line.startswith("strength (")]
    assert stages and len(stages) == len(set(stages)), proc.stderr
    assert any(line.startswith("demo: ") and " map in " in line for line in stages), stages


def test_audit_skips_and_names_an_unreadable_image(tmp_path, monkeypatch, capsys):
    """The policy of every command (issue 30): an unreadable input is skipped and named in one line, the rest is used."""
    from PIL import Image

    (tmp_path / "cwd_models_a30.py").write_text(textwrap.dedent(FACTORY))
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (40, 40), (30, 200, 90)).save(photos / "good.png")
    Image.new("RGB", (40, 40), (200, 30, 90)).save(photos / "good2.png")
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "cwd_models_a30", raising=False)
    code = main(["audit", "--model", "cwd_models_a30:tiny", "--images", "photos", "--no-progress", "--device", "cpu"])
    out = capsys.readouterr()
    assert code in (0, 1), out.err
    skipped = [line for line in out.err.splitlines() if "skipped" in line]
    assert len(skipped) == 1 and "broken.jpg" in skipped[0] and "1 of 3" in skipped[0]
