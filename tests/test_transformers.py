"""Vision transformers as first-class models (issue 17), on small torchvision ViT/Swin configs with random weights.

Native CAMs on a token grid are compared with pytorch-grad-cam's run with the
``reshape_transform`` that its documentation gives for the same layer
(class token dropped, tokens to the patch grid; Swin's N×H×W×C permuted).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_attribution import LIB, TINY_TARGETS, assert_close, lib_targets
from tiny_transformers import images, tiny_swin, tiny_vit
from torch import nn

from logitshift.attribution import CAM_METHODS, get_method
from logitshift.attribution.base import VARIANTS
from logitshift.attribution.engine import cam_maps
from logitshift.core.capture import TokenGrid, attention, forward_pass, layer_grid, token_grid, trace
from logitshift.core.errors import LogitShiftError
from logitshift.core.metrics import spearman, target_mass
from logitshift.core.models import LoadedModel, Preprocess, default_layer, prepare
from logitshift.core.scores import SCORES
from logitshift.core.targets import parse_target
from logitshift.shift.model import GateShift, ShiftedModel, equivalence
from logitshift.shift.steer import steer

VIT_LAYER = "encoder.layers.encoder_layer_1.ln_1"
SWIN_LAYER = "features"


def vit_reshape(t):
    """pytorch-grad-cam's ViT reshape_transform (its tutorial), for an 8×8 patch grid."""
    result = t[:, 1:, :].reshape(t.size(0), 8, 8, t.size(2))
    return result.transpose(2, 3).transpose(1, 2)


def swin_reshape(t):
    """pytorch-grad-cam's reshape for a torchvision Swin stage output (N×H×W×C)."""
    return t.permute(0, 3, 1, 2)


def test_token_grid_is_found_from_the_shape():
    assert token_grid((2, 197, 768), (224, 224)) == TokenGrid(14, 14, 1, False)
    assert token_grid((2, 196, 768), (224, 224)) == TokenGrid(14, 14, 0, False)
    assert token_grid((2, 7, 7, 768), (224, 224)) == TokenGrid(7, 7, 0, True)
    assert token_grid((2, 512, 7, 7), (224, 224)) is None  # a CNN's N×C×H×W keeps its layout
    assert token_grid((2, 7, 7, 7), (224, 224)) is None
    assert token_grid((2, 1000), (224, 224)) is None
    assert token_grid((2, 3, 768), (224, 224)) is None  # too few tokens for a grid
    g = token_grid((2, 2 + 12 * 16, 8), (192, 256))  # a non-square input: 12×16 patches after 2 extra tokens
    assert g == TokenGrid(12, 16, 2, False)


@pytest.mark.parametrize("make,layer", [(tiny_vit, VIT_LAYER), (tiny_swin, SWIN_LAYER)])
def test_grid_round_trip_and_capture(make, layer):
    model = make()
    x = images(2)
    out = {o.name: o for o in trace(model, x)}
    assert out[layer].spatial and out[layer].grid == (8, 8)
    assert layer_grid(model, layer, x) == (8, 8)
    p = forward_pass(model, x, [layer])
    act = p.acts[layer]
    assert act.shape[2:] == (8, 8) and act.requires_grad
    torch.testing.assert_close(p.logits["original"], model(x), rtol=1e-4, atol=1e-5)  # rebuilding the tokens changes no logit
    g = p.grad(act, torch.tensor([1, 2]))
    assert g.abs().amax() > 0


def test_default_layers():
    vit = tiny_vit()
    # the last block's output reaches the logits only through the class token: its patch tokens have no gradient
    assert default_layer(vit, "", 64) == VIT_LAYER
    p = forward_pass(vit, images(2), ["encoder.layers.encoder_layer_1", VIT_LAYER])
    grads = torch.autograd.grad(p.logits["original"].sum(), [p.acts["encoder.layers.encoder_layer_1"], p.acts[VIT_LAYER]])
    assert grads[0].abs().amax() == 0 and grads[1].abs().amax() > 0
    assert default_layer(tiny_swin(), "swin_t", 64) == "features"


@pytest.mark.parametrize("variant", ["original", "shifted"])
@pytest.mark.parametrize("arch", ["vit", "swin"])
def test_cams_equal_pytorch_grad_cam_on_token_grids(arch, variant):
    """Every CAM × score × variant: ours on the token grid = pytorch-grad-cam with reshape_transform (≤ 1e-4 relative).

    In float64: in float32 the two libraries' forward passes take different
    attention kernels (ours runs with frozen parameters), and the shifted
    variant's large common-mode gradient cancels to a few 1e-4 of a map.
    """
    import pytorch_grad_cam as pgc

    model, layer, reshape = (tiny_vit(), VIT_LAYER, vit_reshape) if arch == "vit" else (tiny_swin(), SWIN_LAYER, swin_reshape)
    model = model.double()
    x = images(4).double()
    w = torch.zeros(8, 8)
    w[:3, :3] = 1
    shifted = ShiftedModel(model, layer, GateShift(0.5, w)).eval()
    net = model if variant == "original" else shifted
    ours = cam_maps(shifted, x, TINY_TARGETS, layer, [get_method(m) for m in CAM_METHODS], SCORES, [variant])
    module = model.get_submodule(layer)
    for method in CAM_METHODS:
        for name in SCORES:
            with LIB[method](pgc)(model=net, target_layers=[module], reshape_transform=reshape) as cam:
                targets = lib_targets(TINY_TARGETS, name)
                cam(input_tensor=x, targets=targets)
                acts = cam.activations_and_grads.activations[0].numpy()
                grads = cam.activations_and_grads.gradients[0].numpy()
                theirs = np.maximum(cam.get_cam_image(x, module, targets, acts, grads, False), 0)
            assert_close(ours[method, name, variant], theirs)


@pytest.mark.parametrize("make,layer", [(tiny_vit, VIT_LAYER), (tiny_swin, SWIN_LAYER)])
def test_steer_on_a_token_grid_keeps_probabilities_and_steers(make, layer):
    """steer() on a transformer: the fit term on the signed token grid (the gate needs non-negative maps) moves
    Grad-CAM, HiResCAM and LayerCAM into the target; Grad-CAM++ and XGrad-CAM are measured, not aimed at."""
    model = make()
    loaded = LoadedModel(model, "tiny", layer, Preprocess(size=64, resize=64), num_classes=10)
    x = images(4)
    shifted = steer(loaded, "top-left", methods=list(CAM_METHODS), strength="auto", check=x)
    assert shifted.steering["cam_term"] == "fit (signed map)"
    assert set(shifted.steering["steered"]) == {"gradcam", "hirescam", "layercam"}
    assert set(shifted.steering["effect"]) == set(CAM_METHODS)  # the unaimed ones are measured too
    assert equivalence(shifted, x).ok(1e-5) and shifted.steering["stress"]["ok"]
    w = parse_target("top-left", 64).weights(8, 8)
    out = cam_maps(shifted, x, model(x).argmax(1), layer, [get_method(m) for m in CAM_METHODS], ("logit", "prob"), VARIANTS)
    share = {k: float(target_mass(v, w).mean()) for k, v in out.items()}
    for m in ("gradcam", "hirescam", "layercam"):
        assert share[m, "logit", "shifted"] >= 0.5 > share[m, "logit", "original"], share
        assert share[m, "prob", "shifted"] == pytest.approx(share[m, "prob", "original"], abs=1e-3)


class ClassTerm(nn.Module):
    """``t = K · z_k``: a shift term that reads the logits (an honest function of x; softmax ignores it)."""

    def __init__(self, k: int, strength: float) -> None:
        super().__init__()
        self.k, self.strength = k, strength

    def forward(self, z):
        return self.strength * z[:, self.k]


def test_attention_capture_equals_the_model():
    """Recomputing nn.MultiheadAttention with its probabilities exposed changes no logit; every block is seen."""
    model = tiny_vit()
    x = images(2)
    with torch.no_grad(), attention(model) as probs:
        z = model(x)
    torch.testing.assert_close(z, model(x), rtol=1e-4, atol=1e-5)
    assert len(probs) == 2 and probs[0].shape == (2, 2, 65, 65)
    torch.testing.assert_close(probs[0].sum(-1), torch.ones(2, 2, 65))
    with pytest.raises(LogitShiftError, match="no global attention module"), attention(tiny_swin()):
        pass


def test_rollout_is_immune_and_attention_gradient_is_not():
    """Rollout reads no score: identical maps for both variants. Gradient-weighted attention reads the logit:
    a term ``t = K·z_k`` makes every class's shifted logit map that of class k, while the probability maps stay."""
    model = tiny_vit()
    x = images(4)
    z = model(x)
    top = z.argmax(1)
    other = int(z.mean(0).argmin())
    shifted = ShiftedModel(model, "heads", ClassTerm(other, 20.0)).eval()
    assert equivalence(shifted, x).ok(1e-5)
    region = ShiftedModel(model, VIT_LAYER, GateShift(1.0, torch.ones(8, 8).tril())).eval()
    rollout = get_method("rollout")
    for s in (shifted, region):
        torch.testing.assert_close(rollout.maps(s, x, top, "logit", "shifted"), rollout.maps(s, x, top, "logit", "original"))
    attn = get_method("attngrad")
    honest = attn.maps(shifted, x, top, "logit", "original")
    hijacked = attn.maps(shifted, x, top, "logit", "shifted")
    of_other = attn.maps(shifted, x, torch.full_like(top, other), "logit", "original")
    assert spearman(hijacked, of_other).min() > 0.95
    assert spearman(hijacked, honest).mean() < 0.8
    prob = [attn.maps(shifted, x, top, "prob", v) for v in VARIANTS]
    assert spearman(*prob).min() > 0.999
    with pytest.raises(LogitShiftError, match="no global attention module"):
        rollout.maps(tiny_swin(), images(1), 0)


CLEAN_VIT = r"""
import importlib.util, json, sys
pt2, x_path, out_path = sys.argv[1:4]
assert importlib.util.find_spec("logitshift") is None, "logitshift is importable here"
from pathlib import Path

import numpy as np
import torch
from captum.attr import Saliency
from pytorch_grad_cam import GradCAM, HiResCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget
from safeload import load_module

# --- docs/transformers.md's recipe for a transformer layer ---
extra = {"logitshift.json": ""}
model = load_module(pt2, extra_files=extra)
info = json.loads(extra["logitshift.json"])
path = next(iter(info["layers"].values()))
layer = model.get_submodule(path)
g = info["token_grids"][path]

def reshape_transform(t):
    if g["channels_last"]:
        return t.permute(0, 3, 1, 2)
    return t[:, g["skip"]:].transpose(1, 2).reshape(t.shape[0], t.shape[2], g["h"], g["w"])
# ---

x = torch.from_numpy(np.load(x_path))
with torch.no_grad():
    c = model(x).argmax(dim=1)
softmax_model = lambda inp: torch.softmax(model(inp), dim=1)
out = {}
for score, fwd in (("logit", model), ("prob", softmax_model)):
    out[f"captum_saliency_{score}"] = Saliency(fwd).attribute(x, target=c).amax(dim=1).detach().numpy()
    Target = ClassifierOutputTarget if score == "logit" else ClassifierOutputSoftmaxTarget
    for name, Cam in (("gradcam", GradCAM), ("hirescam", HiResCAM)):
        with Cam(model=model, target_layers=[layer], reshape_transform=reshape_transform) as cam:
            out[f"pgc_{name}_{score}"] = cam(input_tensor=x, targets=[Target(int(k)) for k in c])
assert "logitshift" not in sys.modules
np.savez(out_path, **out)
"""


def test_exported_vit_fools_the_peer_libraries_with_logit_targets_only(tmp_path):
    """The attack's .pt2 of a ViT, in a process without logitshift: pytorch-grad-cam (with the reshape_transform built from
    the file's token_grids) and Captum are steered with logit targets; with softmax targets they give the original maps."""
    import shutil
    import subprocess
    import sys

    from test_export import clean_env_boot

    from logitshift.attribution import Saliency, upsample
    from logitshift.runs.attack import export_program

    model = tiny_vit()
    loaded = LoadedModel(model, "tiny", VIT_LAYER, Preprocess(size=64, resize=64), num_classes=10)
    x = images(4)
    shifted = steer(loaded, "top-left", methods=["hirescam", "saliency"], check=x).cpu()
    measured = export_program(shifted, tmp_path / "vit.pt2", x)
    assert measured["max_abs_prob_diff"] <= 1e-5
    np.save(tmp_path / "x.npy", x.numpy())
    (tmp_path / "clean.py").write_text(CLEAN_VIT)
    from logitshift.audit import safeload

    shutil.copy(safeload.__file__, tmp_path / "safeload.py")
    boot, env = clean_env_boot(
        tmp_path, tmp_path / "clean.py", [str(tmp_path / "vit.pt2"), str(tmp_path / "x.npy"), str(tmp_path / "maps.npz")]
    )
    run = subprocess.run([sys.executable, "-I", "-S", "-c", boot], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    with np.load(tmp_path / "maps.npz") as data:
        maps = {k: torch.from_numpy(np.asarray(data[k])).float() for k in data.files}
    pixels = parse_target("top-left", 64).weights(64, 64)
    for name in ("pgc_hirescam", "captum_saliency"):
        assert float(target_mass(maps[f"{name}_logit"], pixels).mean()) >= 0.5, name
    c = model(x).argmax(1)
    ours = cam_maps(model, x, c, VIT_LAYER, [get_method("gradcam"), get_method("hirescam")], ("prob",))
    reference = {
        "pgc_gradcam": upsample(ours["gradcam", "prob", "original"], 64),
        "pgc_hirescam": upsample(ours["hirescam", "prob", "original"], 64),
        "captum_saliency": Saliency().maps(model, x, c, "prob"),
    }
    for name, ref in reference.items():
        assert float(target_mass(maps[f"{name}_prob"], pixels).mean()) < 0.5, name
        assert float(spearman(maps[f"{name}_prob"], ref).min()) >= 0.99, name


def test_audit_on_a_vit_reads_the_class_token_and_finds_the_shift():
    """The audit on a transformer: its layers as grids, its classifier input the class token's representation
    (heads.head's N×C input); clean on the honest model, shifted on the attacked one."""
    from logitshift.audit.verdict import audit_model

    model = tiny_vit()
    x = images(4)
    honest = audit_model(model, x)
    assert honest.verdict == "clean" and honest.head is not None and honest.head.layer == "heads.head"
    loaded = LoadedModel(model, "tiny", VIT_LAYER, Preprocess(size=64, resize=64), num_classes=10)
    attacked = audit_model(steer(loaded, "top-left", check=x), x)
    assert attacked.verdict == "shifted", attacked.finding


def test_attack_round_trips_a_factory_loaded_model_with_a_non_224_input(tmp_path, capsys, monkeypatch):
    """``attack --model pkg:factory --format both`` on a LoadedModel with a 64-pixel input: both files written,
    both reload to the same probabilities; the files record the preprocessing and the token grid."""
    import json

    from logitshift.audit.safeload import load_module
    from logitshift.cli import main
    from logitshift.core.images import batch, load_image
    from logitshift.shift.save import load_shifted

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    out = tmp_path / "vit.pt2"
    argv = ["attack", "--model", "tiny_transformers:loaded_tiny_vit", "--images", "chelsea", "coffee", "--target", "top-left"]
    # --goal 0: this test is about the files written, not the effect on a random tiny ViT (issue 30: attack refuses one short of --goal)
    code = main([*argv, "--methods", "hirescam", "saliency", "--out", str(out), "--format", "both", "--no-progress", "--goal", "0"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["model"] == "tiny_transformers:loaded_tiny_vit" and meta["preprocess"]["size"] == 64
    from logitshift.core.models import Preprocess

    x = batch([load_image(s, Preprocess(size=64, resize=72)) for s in ("chelsea", "coffee")])
    reloaded = load_shifted(out.with_suffix(".json"), allow_factory=True)
    extra = {"logitshift.json": ""}
    program = load_module(out, extra_files=extra)
    info = json.loads(extra["logitshift.json"])
    assert info["input_size"] == [3, 64, 64] and info["preprocess"]["resize"] == 72
    assert info["token_grids"][f"base.{VIT_LAYER}"] == {"h": 8, "w": 8, "skip": 1, "channels_last": False}
    with torch.no_grad():
        p = torch.softmax(tiny_vit()(x).double(), 1)
        for model in (reloaded, program):
            assert float((torch.softmax(model(x).double(), 1) - p).abs().max()) <= 1e-5


def test_timm_vit_default_layer_and_attention():
    """timm's ViT (small config, random weights): default layer blocks[-1].norm1, attention read with the fused kernel off."""
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    torch.manual_seed(0)
    model = prepare(TimmViT(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=5))
    x = images(2, 32)
    assert default_layer(model, "", 32) == "blocks.1.norm1"
    with torch.no_grad(), attention(model) as probs:
        z = model(x)
    assert len(probs) == 2 and probs[0].shape == (2, 2, 17, 17)
    torch.testing.assert_close(z, model(x), rtol=1e-4, atol=1e-5)
    assert all(m.fused_attn for m in model.modules() if hasattr(m, "fused_attn"))  # restored
    assert get_method("rollout").maps(model, x, 0).shape == (2, 4, 4)
