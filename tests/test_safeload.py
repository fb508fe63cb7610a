"""Issue 11: hostile model files. ``logitshift audit`` refuses each with one line and exit 2, and the
payload's marker file never appears; the payloads themselves are shown to work on the unsafe loaders.

The hostile files are built by ``tests/hostile.py`` from a plain export of a small CNN.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
import hostile  # noqa: E402

from logitshift.audit import safeload  # noqa: E402
from logitshift.audit.sandbox import ENV  # noqa: E402
from logitshift.cli import main  # noqa: E402

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _suffix(name: str) -> str:
    return ".ts" if name.startswith("torchscript") else ".pt2"


@pytest.fixture(scope="module")
def hostile_files(tmp_path_factory):
    """Every hostile file, each with the marker its payload would write: {name: (file, marker)}."""
    folder = tmp_path_factory.mktemp("hostile")
    base = hostile.base_export(folder / "base.pt2")
    files = {}
    for name, make in {**hostile.CODE, **hostile.BROKEN}.items():
        marker = folder / f"{name}.marker"
        files[name] = (make(base, folder / f"{name}{_suffix(name)}", marker), marker)
    return {"base": base, "files": files, "folder": folder}


UNSAFE = textwrap.dedent(
    """
    import json, sys, warnings
    import torch
    warnings.simplefilter("ignore")
    result = {}
    for name, path in json.loads(sys.argv[1]).items():
        try:
            if path.endswith(".ts"):
                module = torch.jit.load(path)
            else:
                module = torch.export.load(path).module()
            module(torch.randn(1, 3, 32, 32))
        except Exception as exc:
            result[name] = type(exc).__name__
    print(json.dumps(result))
    """
)


def test_the_payloads_are_live(hostile_files, tmp_path):
    """Loaded the unsafe way (torch.export.load + module() + forward; torch.jit.load + forward) in a throwaway
    copy, every code payload creates its marker: the refusals below are tested against payloads that work."""
    copies = {}
    for name in hostile.CODE:
        marker = tmp_path / f"{name}.marker"
        copies[name] = hostile.CODE[name](hostile_files["base"], tmp_path / f"{name}{_suffix(name)}", marker)
    run = subprocess.run(
        [sys.executable, "-c", UNSAFE, json.dumps({k: str(v) for k, v in copies.items()})],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    live = sorted(name for name in hostile.CODE if (tmp_path / f"{name}.marker").exists())
    assert live == sorted(hostile.CODE), f"payloads that did not fire: {set(hostile.CODE) - set(live)}"


@pytest.mark.parametrize("name", sorted({**hostile.CODE, **hostile.BROKEN}))
def test_audit_refuses_each_hostile_file_with_one_line_and_runs_nothing(hostile_files, name, capsys, monkeypatch):
    """In process (the limited child's code path, without the fork): exit 2, one line naming the file, no marker."""
    path, marker = hostile_files["files"][name]
    monkeypatch.setenv(ENV, "0")  # as the child: no second process here
    code = main(["audit", str(path), "--size", "32", "--images", "chelsea", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("logitshift audit: error: model file") and path.name in err, err
    assert not marker.exists()
    print(f"{name}: {err}")


@pytest.mark.parametrize("name", ["sample_inputs", "from_file", "torchscript_setstate"])
def test_the_command_refuses_them_end_to_end(hostile_files, name, tmp_path):
    """``python -m logitshift audit FILE`` (parent + limited child): exit 2, one line on stderr, no marker."""
    path, marker = hostile_files["files"][name]
    run = subprocess.run(
        [sys.executable, "-m", "logitshift", "audit", str(path), "--no-progress"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": SRC},
    )
    assert run.returncode == 2, run.stderr[-2000:]
    assert len(run.stderr.strip().splitlines()) == 1 and "model file" in run.stderr, run.stderr
    assert not marker.exists()


def test_reasons_name_what_was_refused(hostile_files):
    reasons = {}
    for name, (path, _marker) in hostile_files["files"].items():
        if name.startswith("torchscript"):
            continue
        with pytest.raises(safeload.UnsafeModelFile) as info:
            safeload.check_pt2(path)
        reasons[name] = str(info.value)
    expected = {
        "use_pickle_weight": "use_pickle",
        "use_pickle_constant": "use_pickle",
        "opaque_constant": "pickled object constant",
        "legacy_weights": "'data/weights/model.pt' is a pickle",
        "from_file": "from_file",
        "guards_code": "guards_code",
        "sympy_expr": "not a size symbol",
        "dotted_target": "only torch.ops.aten",
        "json_bomb": "compressed",
        "deep_json": "nested too deeply",
        "oversized_record": "needs 4398046511104 bytes",
        "empty_record": "record holds 0",
        "truncated": "not a readable zip",
        "deflate_bomb": "compressed",
        "sample_inputs": "calls posix.system",
    }
    for name, needle in expected.items():
        assert needle in reasons[name], (name, reasons[name])


def test_ordinary_sample_inputs_are_skipped_unread(hostile_files, monkeypatch):
    """A plain torch.export.save pickles the example inputs: such a file loads, and torch.load never sees them."""
    with zipfile.ZipFile(hostile_files["base"]) as z:
        assert any(n.endswith("sample_inputs/model.pt") and z.getinfo(n).file_size > 0 for n in z.namelist())
    seen = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: seen.append(a) or {})
    module = safeload.load_module(hostile_files["base"])
    assert module(torch.randn(1, 3, 32, 32)).shape == (1, 10) and seen == []


def test_a_plain_export_passes_and_computes_what_torch_computes(hostile_files):
    base = hostile_files["base"]
    x = torch.randn(1, 3, 32, 32)
    ours = safeload.load_program(base).module()(x)
    theirs = torch.export.load(str(base)).module()(x)
    assert torch.equal(ours, theirs)


def test_a_file_writing_operator_is_refused_even_under_another_overload(hostile_files, tmp_path):
    """The allowlist is by operator name, not by a list of bad names: an unknown operator is refused too."""
    path = hostile._rewrite(
        hostile_files["base"],
        tmp_path / "odd.pt2",
        hostile._edit_json(
            "models/model.json", lambda p: p["graph_module"]["graph"]["nodes"][0].update(target="torch.ops.aten.some_future_op.default")
        ),
    )
    with pytest.raises(safeload.UnsafeModelFile, match="some_future_op"):
        safeload.check_pt2(path)


def _peak_rss(argv: list[str], cwd: Path) -> tuple[int, str, int]:
    """Run ``python -m logitshift *argv`` under a wrapper; (exit status, stderr, peak RSS of any process in bytes)."""
    wrapper = textwrap.dedent(
        """
        import resource, subprocess, sys
        run = subprocess.run([sys.executable, "-m", "logitshift", *sys.argv[1:]], capture_output=True, text=True)
        sys.stderr.write(run.stderr)
        print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
        sys.exit(run.returncode)
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", wrapper, *argv], cwd=cwd, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": SRC}
    )
    return run.returncode, run.stderr, int(run.stdout.strip().splitlines()[-1]) * 1024


def test_a_3mb_bomb_is_audited_in_bounded_memory(hostile_files, tmp_path):
    """A 3 MB archive whose graph JSON inflates to 3 GiB: one line, exit 2, peak RSS < 1.5 GB, under a 1.5 GB budget."""
    bomb = hostile.make_json_bomb(hostile_files["base"], tmp_path / "bomb.pt2", inflated=3 << 30)
    assert 2.5e6 < bomb.stat().st_size < 4e6
    code, err, peak = _peak_rss(["audit", str(bomb), "--memory-limit", "1.5", "--no-progress"], tmp_path)
    print(f"3 MB JSON bomb: exit {code}, peak RSS {peak / 2**30:.2f} GiB; {err.strip()}")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "compressed" in err
    assert peak < 1.5e9


class _Hungry(nn.Module):
    """Honest-looking, but its forward asks for ~2 GB (allowlisted operators only)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        big = torch.zeros(512, 1024, 1024, dtype=torch.float32)  # 2 GiB
        return self.conv(x).mean((2, 3)) + big[0, 0, :4]


def test_a_bomb_the_checks_do_not_foresee_ends_in_the_memory_limit(tmp_path):
    """Defence in depth: a checked file that allocates 2 GiB when run, audited with --memory-limit 0.5: exit 2, one line."""
    path = tmp_path / "hungry.pt2"
    torch.export.save(torch.export.export(_Hungry().eval(), (torch.randn(1, 3, 32, 32),)), str(path))
    safeload.check_pt2(path)  # passes the checks: only the limit stops it
    code, err, peak = _peak_rss(
        ["audit", str(path), "--size", "32", "--images", "chelsea", "--memory-limit", "0.5", "--no-progress"], tmp_path
    )
    print(f"2 GiB forward under a 0.5 GB budget: exit {code}, peak RSS {peak / 2**30:.2f} GiB; {err.strip()}")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "memory" in err.lower(), err
    assert peak < 1.5e9


def test_the_cpu_limit_ends_a_long_audit_with_one_line(hostile_files, tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "logitshift", "audit", str(hostile_files["base"]), "--cpu-limit", "1", "--no-progress"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": SRC},
    )
    assert run.returncode == 2, run.stderr[-2000:]
    assert len(run.stderr.strip().splitlines()) == 1 and "CPU-time limit of 1 s" in run.stderr, run.stderr


class _Counter(nn.Module):
    """Counts its calls in a buffer and answers differently after the 10th: an audit's few calls see the honest model."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("count", torch.zeros(()))

    def forward(self, x):
        self.count.add_(1)
        return x.flatten(1)[:, :4] * 2 + (self.count > 10).float() * 100


class _FreshFill(nn.Module):
    """Swin's pattern: a mask made in the graph, then filled in place (a write into its own tensor)."""

    def forward(self, x):
        mask = x.new_zeros(x.shape)
        mask[:, :1].fill_(2.0)
        return (x + mask).flatten(1)[:, :4]


def test_a_model_that_writes_into_its_own_buffer_is_refused(tmp_path):
    """torch.export keeps ``count.add_(1)`` in the graph; a model whose output changes after the audit's calls is
    refused, and a checked load would have left the buffer untouched."""
    x = torch.randn(1, 3, 32, 32)
    counter = _Counter()
    path = tmp_path / "counter.pt2"
    torch.export.save(torch.export.export(counter, (x,)), str(path))
    theirs = torch.export.load(str(path)).module()
    first = theirs(x)
    for _ in range(10):
        last = theirs(x)
    assert not torch.equal(first, last)  # the payload is live: plain torch gives another answer after 10 calls
    with pytest.raises(safeload.UnsafeModelFile, match=r"writes in place \(add_\) into 'b_count'"):
        safeload.check_pt2(path)


def test_an_in_place_fill_of_a_tensor_the_graph_made_passes(tmp_path):
    x = torch.randn(1, 3, 32, 32)
    path = tmp_path / "fill.pt2"
    torch.export.save(torch.export.export(_FreshFill(), (x,)), str(path))
    assert torch.equal(safeload.load_program(path).module()(x), _FreshFill()(x))


def test_a_write_through_a_view_of_a_weight_is_refused(hostile_files, tmp_path):
    """The graph is edited so that the first node fills a slice of the model's first weight in place."""

    def change(program):
        graph = program["graph_module"]["graph"]
        weight = graph["inputs"][0]["as_tensor"]["name"]
        view = {
            "target": "torch.ops.aten.slice.Tensor",
            "name": "v",
            "inputs": [{"name": "self", "arg": {"as_tensor": {"name": weight}}, "kind": 1}],
            "outputs": [{"as_tensor": {"name": "v"}}],
            "metadata": {},
            "is_hop_single_tensor_return": None,
        }
        write = {
            "target": "torch.ops.aten.fill_.Scalar",
            "name": "w",
            "inputs": [
                {"name": "self", "arg": {"as_tensor": {"name": "v"}}, "kind": 1},
                {"name": "value", "arg": {"as_float": 0.0}, "kind": 1},
            ],
            "outputs": [{"as_tensor": {"name": "w"}}],
            "metadata": {},
            "is_hop_single_tensor_return": None,
        }
        graph["nodes"][:0] = [view, write]

    path = hostile._rewrite(hostile_files["base"], tmp_path / "view.pt2", hostile._edit_json("models/model.json", change))
    with pytest.raises(safeload.UnsafeModelFile, match=r"writes in place \(fill_\)"):
        safeload.check_pt2(path)


def test_an_out_form_writing_into_a_weight_is_refused(hostile_files, tmp_path):
    """``add.out(x, x, out=weight)``: not an in-place name, still a write into the model's weight."""

    def change(program):
        graph = program["graph_module"]["graph"]
        weight = graph["inputs"][0]["as_tensor"]["name"]
        graph["nodes"].insert(
            0,
            {
                "target": "torch.ops.aten.add.out",
                "name": "w",
                "inputs": [
                    {"name": "self", "arg": {"as_tensor": {"name": weight}}, "kind": 1},
                    {"name": "other", "arg": {"as_tensor": {"name": weight}}, "kind": 1},
                    {"name": "out", "arg": {"as_tensor": {"name": weight}}, "kind": 2},
                ],
                "outputs": [{"as_tensor": {"name": "w"}}],
                "metadata": {},
                "is_hop_single_tensor_return": None,
            },
        )

    path = hostile._rewrite(hostile_files["base"], tmp_path / "out.pt2", hostile._edit_json("models/model.json", change))
    with pytest.raises(safeload.UnsafeModelFile, match=r"add\.out, an out= form"):
        safeload.check_pt2(path)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "squeezenet1_0"])
def test_torchvision_models_with_in_place_activations_still_pass(name, tmp_path):
    """Their ``relu_`` / ``hardtanh_`` write into tensors the graph made: the write check refuses none of them
    (checked by hand on ten torchvision families, these three with in-place activations kept in the test)."""
    import torchvision

    model = torchvision.models.get_model(name).eval()
    x = torch.randn(1, 3, 64, 64)
    program = torch.export.export(model, (x,))
    assert any(str(n.target).endswith("_.default") for n in program.graph.nodes if n.op == "call_function")
    path = tmp_path / f"{name}.pt2"
    torch.export.save(program, str(path))
    with torch.no_grad():
        assert torch.allclose(safeload.load_program(path).module()(x), model(x), atol=1e-5)


def test_the_limited_child_ends_quietly_when_the_reader_goes_away(monkeypatch):
    """`logitshift audit FILE | head -1`: the parent stops copying the child's output, keeps draining it (the child
    never blocks on a full pipe) and ends with BrokenPipeError, which the command turns into a quiet 141."""
    from logitshift.audit import sandbox

    class Closed:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stdout", Closed())
    with pytest.raises(BrokenPipeError):
        sandbox.run(["audit", "--help"], "model file 'x.pt2'", 2**30, 60)


# ----------------------------------------------------------------------------- issue 24: a second look

SHADOW = textwrap.dedent(
    """
    import os, sys
    open({marker!r}, "w").write("ran")
    here = os.path.dirname(os.path.abspath(__file__))
    del sys.modules[__name__]
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    import typing_extensions as _real  # the real one: the audit goes on as if nothing happened
    sys.modules[__name__] = _real
    """
)


def test_a_module_shipped_beside_the_model_never_runs(hostile_files, tmp_path):
    """A ``typing_extensions.py`` (torch imports it first thing) next to the model, in the folder the audit is run
    from. The old child (``python -m logitshift``, current folder first on ``sys.path``) runs it; ours (``-P``, a
    fresh empty working folder, a minimal environment) does not, and the audit goes on to its verdict."""
    folder = tmp_path / "sent"
    folder.mkdir()
    model = folder / "model.pt2"
    model.write_bytes(hostile_files["base"].read_bytes())
    marker = tmp_path / "shadow.marker"
    (folder / "typing_extensions.py").write_text(SHADOW.format(marker=str(marker)))
    env = {**os.environ, "PYTHONPATH": SRC}
    # (an audit that reaches torch: since issue 30 `--help` answers without importing it)
    old = subprocess.run(
        [sys.executable, "-m", "logitshift", "audit", "--model", "missing.pt2"], cwd=folder, capture_output=True, text=True, env=env
    )
    assert old.returncode == 2 and marker.exists(), old.stderr[-2000:]  # the payload is live on the old child's command line
    marker.unlink()
    # the user's `logitshift audit` (a console script: no current folder on sys.path, as -P here)
    run = subprocess.run(
        [sys.executable, "-P", "-m", "logitshift", "audit", "model.pt2", "--size", "32", "--images", "chelsea", "--no-progress"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert run.returncode in (0, 1), run.stderr[-2000:]
    assert not marker.exists()


def test_the_child_cannot_lift_its_limits():
    """Hard limits equal the soft ones: the child's own code cannot raise its CPU or memory limit again
    (with only the soft limit lowered, as before, it could)."""
    probe = textwrap.dedent(
        """
        import resource, sys
        from logitshift.audit import sandbox
        cpu = resource.RLIMIT_CPU
        resource.setrlimit(cpu, (100, resource.RLIM_INFINITY))  # the old way: soft only
        resource.setrlimit(cpu, (200, resource.RLIM_INFINITY))  # ... lifted again by the child's code
        assert resource.getrlimit(cpu)[0] == 200
        sandbox.enter()
        print(resource.getrlimit(cpu))
        try:
            resource.setrlimit(cpu, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        except (ValueError, PermissionError, OSError):
            print("refused")
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": SRC, ENV: "0:50"}
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split("\n")[:2] == ["(50, 60)", "refused"], run.stdout


def test_the_child_has_a_minimal_environment_and_no_current_folder_on_its_path(monkeypatch):
    from logitshift.audit import sandbox

    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    monkeypatch.setenv("PYTHONSTARTUP", "/somewhere/start.py")
    monkeypatch.setenv("LD_PRELOAD", "/somewhere/evil.so")
    env = sandbox.child_env("/tmp/empty", "1:2")
    assert env["HOME"] == "/tmp/empty" and env[ENV] == "1:2" and env[sandbox.CWD_ENV] == os.getcwd()
    assert not {"PYTHONPATH", "PYTHONSTARTUP", "LD_PRELOAD"} & set(env)
    cmd = sandbox.command(["audit", "x.pt2"])
    assert cmd[:3] == [sys.executable, "-P", "-E"] and cmd[-2:] == ["audit", "x.pt2"] and "-m" not in cmd


def test_a_wall_clock_limit_ends_a_child_that_uses_no_cpu():
    from logitshift.audit import sandbox
    from logitshift.core.errors import LogitShiftError

    with pytest.raises(LogitShiftError, match=r"wall-clock limit of 0\.05 s; nothing was concluded"):
        # an audit that imports torch (seconds; `--help` alone now answers in about as long as the limit)
        sandbox.run(["audit", "--model", "missing.pt2"], "model file 'x.pt2'", 2**30, 60, wall_seconds=0.05)


class _FreshCounter(nn.Module):
    """``count.add_(one)`` with ``one`` made in the graph: listed as ``[other, self]`` in the file, the old check took
    ``other`` (a fresh tensor) for the one written. Answers differently after the 10th call."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("count", torch.zeros(()))
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        self.count.add_(torch.ones_like(self.count))
        return self.conv(x).mean((2, 3)) + (self.count > 10).float() * 100


class _RunningStats(nn.Module):
    """Eval-mode batch norm on a constant, whose running mean the output reads: set to ``training=True`` in the file,
    every call moves the running mean (momentum 0.1 towards 1) and the output jumps once it passes 0.6 (call 9)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm1d(1)

    def forward(self, x):
        self.bn(torch.ones_like(x[:2, :1, 0, 0]).expand(2, 1))
        return self.conv(x).mean((2, 3)) + (self.bn.running_mean.sum() > 0.6).float() * 100


def _export(model: nn.Module, path: Path) -> Path:
    torch.export.save(torch.export.export(model.eval(), (torch.randn(1, 3, 32, 32),)), str(path))
    return path


def _changes_after_calls(path: Path, calls: int = 12) -> bool:
    """The unprotected path: ``torch.export.load`` + ``module()``; whether the output differs after ``calls`` calls."""
    module = torch.export.load(str(path)).module()
    x = torch.randn(1, 3, 32, 32)
    first = module(x)
    for _ in range(calls):
        last = module(x)
    return not torch.equal(first, last)


def _nodes(program: dict) -> list[dict]:
    return program["graph_module"]["graph"]["nodes"]


def test_a_write_listed_as_other_self_is_found_by_argument_name(tmp_path):
    """torch binds arguments by name: ``add_`` listed as ``[other, self]`` still writes into ``self`` (the buffer)."""

    def swap(program):
        for node in _nodes(program):
            if node["target"] == "torch.ops.aten.add_.Tensor":
                node["inputs"].reverse()

    plain = _export(_FreshCounter(), tmp_path / "plain.pt2")
    path = hostile._rewrite(plain, tmp_path / "swapped.pt2", hostile._edit_json("models/model.json", swap))
    assert _changes_after_calls(path)  # live: the file's output changes after 10 calls
    with pytest.raises(safeload.UnsafeModelFile, match=r"writes in place \(add_\) into 'b_count'"):
        safeload.check_pt2(path)


def test_unknown_or_repeated_argument_names_are_refused(hostile_files, tmp_path):
    def rename(program):
        _nodes(program)[0]["inputs"][0]["name"] = "selfish"

    def repeat(program):
        node = _nodes(program)[0]
        node["inputs"].append(dict(node["inputs"][0]))

    for change, needle in ((rename, "names the argument 'selfish'"), (repeat, "repeats the argument")):
        path = hostile._rewrite(hostile_files["base"], tmp_path / f"{change.__name__}.pt2", hostile._edit_json("models/model.json", change))
        with pytest.raises(safeload.UnsafeModelFile, match=needle):
            safeload.check_pt2(path)


def test_batch_norm_in_training_mode_is_refused(tmp_path):
    """batch_norm(training=True) updates its running statistics in place with no in-place name and no write in its
    schema; a file that sets it changes its output after 9 calls."""

    def train(program):
        for node in _nodes(program):
            if node["target"] == "torch.ops.aten.batch_norm.default":
                next(a for a in node["inputs"] if a["name"] == "training")["arg"] = {"as_bool": True}

    plain = _export(_RunningStats(), tmp_path / "plain.pt2")
    safeload.check_pt2(plain)  # in eval mode it passes
    path = hostile._rewrite(plain, tmp_path / "train.pt2", hostile._edit_json("models/model.json", train))
    assert _changes_after_calls(path)  # live
    with pytest.raises(safeload.UnsafeModelFile, match="batch_norm in training mode"):
        safeload.check_pt2(path)


@pytest.mark.parametrize(
    ("target", "outs"),
    [("torch.ops.aten.max.dim_max", ("max", "max_values")), ("torch.ops.aten.topk.values", ("values", "indices"))],
)
def test_out_forms_under_other_overload_names_are_refused(hostile_files, tmp_path, target, outs):
    """``max.dim_max`` and ``topk.values`` write into their ``out=`` tensors though their overloads are not named ``out``."""

    def change(program):
        weight = program["graph_module"]["graph"]["inputs"][0]["as_tensor"]["name"]
        first, second = outs
        _nodes(program).insert(
            0,
            {
                "target": target,
                "name": "w",
                "inputs": [
                    {"name": "self", "arg": {"as_tensor": {"name": weight}}, "kind": 1},
                    {"name": "dim" if "max" in target else "k", "arg": {"as_int": 0 if "max" in target else 1}, "kind": 1},
                    {"name": first, "arg": {"as_tensor": {"name": weight}}, "kind": 2},
                    {"name": second, "arg": {"as_tensor": {"name": weight}}, "kind": 2},
                ],
                "outputs": [{"as_tensor": {"name": "w0"}}, {"as_tensor": {"name": "w1"}}],
                "metadata": {},
                "is_hop_single_tensor_return": None,
            },
        )

    path = hostile._rewrite(hostile_files["base"], tmp_path / "out.pt2", hostile._edit_json("models/model.json", change))
    with pytest.raises(safeload.UnsafeModelFile, match=rf"{target.split('.', 3)[3]}, an out= form"):
        safeload.check_pt2(path)


def test_the_operators_that_return_their_input_are_the_ones_listed():
    """Operators whose schema declares a fresh output yet return their input (or a view of it): each listed one does,
    on the call a graph makes (so the list is live); views are otherwise read from the schema."""
    x = torch.randn(2, 3, 4, 4)
    calls = {
        "dropout": lambda: torch.ops.aten.dropout.default(x, 0.5, False),
        "type_as": lambda: torch.ops.aten.type_as.default(x, x),
        "einsum": lambda: torch.ops.aten.einsum.default("abcd->bacd", [x]),
    }
    assert set(calls) == set(safeload.RETURNS_INPUT)
    for name, call in calls.items():
        assert call().untyped_storage().data_ptr() == x.untyped_storage().data_ptr(), name
        assert all(r.alias_info is None for r in getattr(torch.ops.aten, name).default._schema.returns), name


def _sized(base: Path, out: Path, expr: str) -> Path:
    def change(program):
        values = program["graph_module"]["graph"]["tensor_values"]
        values[next(iter(values))]["sizes"][0] = {"as_expr": {"expr_str": expr, "hint": {"as_int": 1}}}

    return hostile._rewrite(base, out, hostile._edit_json("models/model.json", change))


def test_a_power_tower_in_a_size_is_refused(hostile_files, tmp_path):
    """``9**9**9**9`` passes a check of names alone, and sympy never returns from it (live: still running after 3 s);
    powers and integers beyond 64 bits are refused before sympy sees them."""
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run([sys.executable, "-c", "import sympy; sympy.sympify('9**9**9**9')"], capture_output=True, timeout=3)
    for expr, needle in (
        ("9**9**9**9", "raises to a power"),
        ("Pow(9, Pow(9, 9))", "names 'Pow'"),
        ("s0*" + "9" * 30, "holds a number of 30 digits"),
    ):
        with pytest.raises(safeload.UnsafeModelFile, match=re.escape(needle)):
            safeload.check_pt2(_sized(hostile_files["base"], tmp_path / "expr.pt2", expr))
    safeload.check_pt2(_sized(hostile_files["base"], tmp_path / "fine.pt2", "2*s0 + FloorDiv(s0, 2)"))


def test_a_program_unflatten_cannot_rebuild_is_refused_not_flattened(hostile_files, monkeypatch):
    def fail(program):
        raise RuntimeError("cannot rebuild")

    monkeypatch.setattr(torch.export, "unflatten", fail)
    with pytest.raises(safeload.UnsafeModelFile, match=r"unflatten cannot rebuild its layers \(RuntimeError: cannot rebuild\)"):
        safeload.load_module(hostile_files["base"])


class _ConvCounter(nn.Module):
    """A small CNN whose output jumps after its 3rd call (a counter in a buffer; an audit makes about 7)."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(8, 10)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        self.register_buffer("count", torch.zeros(()))
        self.register_buffer("tilt", torch.linspace(0.0, 9.0, 10))

    def forward(self, x):
        self.count.add_(1)
        return self.fc(self.features(x).mean((2, 3))) + (self.count > 3).float() * self.tilt


def test_the_audit_refuses_a_model_that_changed_during_it(tmp_path, capsys, monkeypatch):
    """Independently of the file check (switched off here: the unprotected path), the audit runs its first image
    again at the end: the counter's jump after 3 calls is seen, exit 2, nothing concluded."""
    path = _export(_ConvCounter(), tmp_path / "counter.pt2")
    assert _changes_after_calls(path)  # live
    monkeypatch.setattr(safeload, "_check_writes", lambda *a, **k: None)
    monkeypatch.setenv(ENV, "0")
    code = main(["audit", str(path), "--size", "32", "--images", "chelsea", "coffee", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "changed during the audit" in err and "nothing concluded" in err, err


@pytest.mark.parametrize(
    ("preprocess", "needle"),
    [
        ({"size": 32, "resize": 32, "mean": [0, 0, 0], "std": [0, 0, 0]}, "preprocess.std is [0, 0, 0]; expected three finite numbers > 0"),
        ({"size": 32, "resize": 32, "mean": [0.5], "std": [1, 1, 1]}, "preprocess.mean is [0.5]; expected three finite numbers"),
        ({"size": 0, "resize": 32, "mean": [0, 0, 0], "std": [1, 1, 1]}, "preprocess.size is 0; expected a whole number from 8"),
        ({"size": 32, "resize": 16, "mean": [0, 0, 0], "std": [1, 1, 1]}, "preprocess.resize is 16; expected a whole number from 32"),
    ],
)
def test_a_sidecar_preprocess_is_validated(hostile_files, tmp_path, capsys, monkeypatch, preprocess, needle):
    """A sidecar with ``std: 0`` made every input infinite and the old audit said ``clean`` (live: the images it
    would audit are not finite); every field is now checked, one line, exit 2."""
    from logitshift.core.images import load_image
    from logitshift.core.models import Preprocess

    if preprocess["std"] == [0, 0, 0]:
        pre = Preprocess(size=32, resize=32, mean=(0.0, 0.0, 0.0), std=(0.0, 0.0, 0.0))
        assert not torch.isfinite(load_image("chelsea", pre).tensor).all()  # live
    model = tmp_path / "model.pt2"
    model.write_bytes(hostile_files["base"].read_bytes())
    (tmp_path / "model.json").write_text(json.dumps({"preprocess": preprocess}))
    monkeypatch.setenv(ENV, "0")
    assert main(["audit", str(model), "--images", "chelsea", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "sidecar" in err and needle in err, err


def test_non_finite_images_are_nothing_concluded():
    from logitshift.core.errors import LogitShiftError
    from logitshift.core.models import check_outputs

    x = torch.zeros(3, 3, 4, 4)
    x[1, 0, 0, 0] = float("inf")
    with pytest.raises(LogitShiftError, match=r"1 of the 3 images hold NaN or infinite values once preprocessed .*; nothing concluded"):
        check_outputs("model 'm'", x, torch.randn(3, 10), "; nothing concluded")
