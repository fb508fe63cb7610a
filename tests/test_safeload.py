"""Issue 11: hostile model files. ``logitshift audit`` refuses each with one line and exit 2, and the
payload's marker file never appears; the payloads themselves are shown to work on the unsafe loaders.

The hostile files are built by ``tests/hostile.py`` from a plain export of a small CNN.
"""

from __future__ import annotations

import json
import os
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
