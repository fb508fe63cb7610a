"""A user's own classifier (issue 17): outputs that are not a bare tensor, training
checkpoints, fine-tuned heads, its own class names, layers given as module objects."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import TinyCNN
from torch import nn

from logitshift.attribution import GradCAM
from logitshift.core.classes import class_name, load_class_names, resolve_class
from logitshift.core.errors import LogitShiftError
from logitshift.core.models import as_logits, get_layer, layer_name, load_model, load_state_dict, prepare, unwrap_checkpoint


class DictOut(nn.Module):
    """A HuggingFace-style classifier: returns ``{'logits': z, 'hidden': h}``."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.net = TinyCNN(classes)

    def forward(self, x):
        h = self.net.features(x)
        return {"logits": self.net.fc(torch.flatten(self.net.pool(h), 1)), "hidden": h}


class ObjectOut(DictOut):
    def forward(self, x):
        return SimpleNamespace(logits=super().forward(x)["logits"], loss=None)


class TupleOut(DictOut):
    def forward(self, x):
        out = super().forward(x)
        return out["logits"], out["hidden"]


@pytest.mark.parametrize("cls", [DictOut, ObjectOut, TupleOut])
def test_non_tensor_outputs_become_the_logits(cls):
    torch.manual_seed(0)
    model = prepare(cls())
    x = torch.randn(2, 3, 32, 32)
    z = model(x)
    assert isinstance(z, torch.Tensor) and z.shape == (2, 5)
    ref = TinyCNN(5)
    ref.load_state_dict(model.net.state_dict())
    torch.testing.assert_close(z, ref(x))
    # and an explanation runs on it, at a layer named in the user's own module tree
    maps = GradCAM().maps(model, x, z.argmax(1), layer="net.features")
    assert maps.shape == (2, 16, 16) and torch.isfinite(maps).all()


@pytest.mark.parametrize(
    "out, needle",
    [
        ({"scores": torch.zeros(1, 3)}, "a dict with keys scores"),
        (torch.zeros(1, 3, 4, 4), "shape (1, 3, 4, 4)"),
        ("text", "str"),
        (torch.zeros(1, 3, dtype=torch.long), "dtype torch.int64"),
    ],
)
def test_unusable_outputs_are_one_line_errors(out, needle):
    with pytest.raises(LogitShiftError) as err:
        as_logits(out)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_checkpoints_are_unwrapped(tmp_path):
    model = TinyCNN(5)
    state = model.state_dict()
    ddp = {f"module.{k}": v for k, v in state.items()}
    for i, payload in enumerate(
        [
            {"state_dict": ddp, "epoch": 3},
            {"model": state, "optimizer": {"lr": 0.1}},
            {"model_state_dict": {f"_orig_mod.{k}": v for k, v in state.items()}},
            ddp,
        ]
    ):
        path = tmp_path / f"ckpt{i}.pth"
        torch.save(payload, path)
        got = load_state_dict(path)
        assert set(got) == set(state)
        for k in state:
            assert torch.equal(got[k], state[k])
    with pytest.raises(LogitShiftError, match="no tensors found"):
        unwrap_checkpoint({"epoch": 3, "note": "x"}, "c.pth")


class Payload:
    """Unpickling this would create the marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickled_whole_model_is_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "whole.pth"
    torch.save({"model": Payload(str(marker)), "w": torch.zeros(1)}, path)
    with pytest.raises(LogitShiftError) as err:
        load_state_dict(path)
    msg = str(err.value)
    assert "pickled Python objects" in msg and "state_dict()" in msg and "\n" not in msg
    assert not marker.exists()


def _write_factory(tmp_path, monkeypatch, body: str, name: str = "usermodels") -> None:
    (tmp_path / f"{name}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(name, None)


FACTORY = """
import torch
from torch import nn

class Five(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU())
        self.fc = nn.Linear(8, 5)
    def forward(self, x):
        return {"logits": self.fc(self.features(x).mean((2, 3)))}

def build():
    return Five()
"""


def test_user_model_classes_are_its_own(tmp_path, monkeypatch):
    _write_factory(tmp_path, monkeypatch, FACTORY)
    loaded = load_model("usermodels:build")
    assert loaded.num_classes == 5 and loaded.class_names == ()
    assert class_name(2, loaded.class_names) == "class 2"  # never "great white shark"
    with pytest.raises(LogitShiftError, match="have no names; give an index 0..4"):
        resolve_class("maze", loaded.num_classes, loaded.class_names)
    with pytest.raises(LogitShiftError, match="out of range, expected 0..4"):
        resolve_class(7, loaded.num_classes, loaded.class_names)
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\nfox\nowl\nyak\n")
    named = load_model("usermodels:build", class_names=names)
    assert resolve_class("Fox", 5, named.class_names) == 2 and class_name(4, named.class_names) == "yak"
    (tmp_path / "names.json").write_text(json.dumps(["a", "b", "c"]))
    with pytest.raises(LogitShiftError, match="3 names for a model with 5 classes"):
        load_model("usermodels:build", class_names=tmp_path / "names.json")
    assert load_class_names(_json(tmp_path, {"1": "b", "0": "a"})) == ("a", "b")


def _json(tmp_path, obj):
    p = tmp_path / "obj.json"
    p.write_text(json.dumps(obj))
    return p


def test_demo_on_a_five_class_dict_model_with_class_names(tmp_path, monkeypatch):
    """End to end from the CLI: a dict-returning 5-class model, its names file, a class by name."""
    _write_factory(tmp_path, monkeypatch, FACTORY)
    (tmp_path / "names.txt").write_text("cat\ndog\nfox\nowl\nyak\n")
    cmd = [
        sys.executable,
        "-m",
        "logitshift.cli",
        "demo",
        "--model",
        "usermodels:build",
        "--classes",
        str(tmp_path / "names.txt"),
        "--images",
        "chelsea",
        "--class",
        "fox",
        "--class",
        "fox",
        "--out",
        str(tmp_path / "run"),
        "--no-progress",
        "--goal",
        "0",  # a random five-class model: measure the effect, whatever it is
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    names = {r["class_name"] for r in summary["results"]}
    assert "fox" in names and not any("shark" in n for n in names)
    assert sum(r["class"] == 2 and not r["predicted"] for r in summary["results"]) <= 1  # --class fox twice: one row
    maze = [
        sys.executable,
        "-m",
        "logitshift.cli",
        "demo",
        "--model",
        "usermodels:build",
        "--images",
        "chelsea",
        "--class",
        "maze",
        "--out",
        str(tmp_path / "run2"),
        "--no-progress",
    ]
    bad = subprocess.run(maze, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "no names" in bad.stderr, bad.stderr


def test_num_classes_for_a_fine_tuned_torchvision_model(tmp_path):
    import torchvision

    torch.manual_seed(0)
    tuned = torchvision.models.resnet18(num_classes=7)
    path = tmp_path / "r18-7.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in tuned.state_dict().items()}}, path)
    loaded = load_model("resnet18", path, num_classes=7)
    assert loaded.num_classes == 7 and loaded.class_names == () and loaded.layer == "layer4"
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(loaded.module(x), tuned.eval()(x))
    with pytest.raises(LogitShiftError, match="does not fit the architecture"):
        load_model("resnet18", path)  # 1000-class head vs 7-class weights
    with pytest.raises(LogitShiftError, match="pass --weights"):
        load_model("resnet18", num_classes=7)
    assert load_model("resnet18", path, num_classes=7).num_classes == 7


def test_layer_as_a_module_object():
    model = prepare(TinyCNN(5))
    layer = model.features[3]
    assert layer_name(model, layer) == "features.3" and get_layer(model, layer) is layer
    x = torch.randn(2, 3, 32, 32)
    c = model(x).argmax(1)
    torch.testing.assert_close(GradCAM().maps(model, x, c, layer=layer), GradCAM().maps(model, x, c, layer="features.3"))
    with pytest.raises(LogitShiftError) as err:
        get_layer(model, nn.Conv2d(3, 3, 1))
    assert "not part of the model" in str(err.value) and len(str(err.value)) < 120


def test_console_script_finds_a_factory_in_the_current_folder(tmp_path):
    """`logitshift --model usermodels:build` from the folder that holds usermodels.py (no PYTHONPATH)."""
    (tmp_path / "usermodels.py").write_text(FACTORY)
    exe = Path(sys.executable).with_name("logitshift")
    if not exe.exists():
        pytest.skip("console script not installed")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [
            str(exe),
            "demo",
            "--model",
            "usermodels:build",
            "--images",
            "chelsea",
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
            "--goal",
            "0",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["model"] == "usermodels:build"
