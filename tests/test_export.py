"""Export: the shifted model as files, and the peer libraries fooled by it in a clean interpreter.

The acceptance test exports the real EfficientNet-Lite0 shifted toward the
top-left 64×64 pixels once per session, then runs Captum and
pytorch-grad-cam on the file, loaded with a copy of ``logitshift/safeload.py`` (the
README's recipe), in a fresh ``python -I -S`` process whose
``sys.path`` holds the standard library and site-packages but not the
``.pth`` file of logitshift's editable install: logitshift cannot be imported
there at all (checked with ``importlib.util.find_spec``), and
``'logitshift' not in sys.modules`` is asserted at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from logitshift.attribution import CAM_METHODS, IntegratedGradients, Saliency, upsample
from logitshift.attribution.engine import cam_maps
from logitshift.audit import safeload
from logitshift.cli import main
from logitshift.core.errors import LogitShiftError
from logitshift.core.metrics import spearman, target_mass
from logitshift.core.targets import parse_target
from logitshift.runs.attack import export_program
from logitshift.shift.model import FitShift, GateShift, InputShift, ShiftedModel
from logitshift.shift.save import build_terms, describe_terms, load_shifted, save_shifted
from logitshift.shift.steer import steer

TARGET = "0,0,64,64"  # top-left 64×64 pixels = 2×2 cells of the 7×7 grid
IG_STEPS = 4
CLEAN_SCRIPT = textwrap.dedent(
    r"""
    import importlib.util, json, sys
    pt2, x_path, out_path = sys.argv[1:4]
    assert importlib.util.find_spec("logitshift") is None, "logitshift is importable here"
    import numpy as np
    import torch
    torch.set_num_threads(2)
    from captum.attr import IntegratedGradients, LayerGradCam, Saliency
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget

    from safeload import load_module  # the README's recipe: a copy of logitshift/safeload.py, next to this script

    extra = {"logitshift.json": ""}
    model = load_module(pt2, extra_files=extra)
    info = json.loads(extra["logitshift.json"])
    layer = model.get_submodule(info["layers"]["head"])
    x = torch.from_numpy(np.load(x_path))
    with torch.no_grad():
        probs = torch.softmax(model(x), dim=1)
    c = probs.argmax(dim=1)
    softmax_model = lambda inp: torch.softmax(model(inp), dim=1)
    out = {"probs": probs.numpy()}
    for score, fwd in (("logit", model), ("prob", softmax_model)):
        out[f"captum_gradcam_{score}"] = LayerGradCam(fwd, layer).attribute(x, target=c, relu_attributions=True)[:, 0].detach().numpy()
        out[f"captum_saliency_{score}"] = Saliency(fwd).attribute(x, target=c).amax(dim=1).detach().numpy()
        out[f"captum_ig_{score}"] = IntegratedGradients(fwd).attribute(x, target=c, n_steps=%d, internal_batch_size=16).sum(dim=1).detach().numpy()
        Target = ClassifierOutputTarget if score == "logit" else ClassifierOutputSoftmaxTarget
        for name, Cam in (("gradcam", GradCAM), ("gradcampp", GradCAMPlusPlus), ("hirescam", HiResCAM), ("xgradcam", XGradCAM), ("layercam", LayerCAM)):
            with Cam(model=model, target_layers=[layer]) as cam:
                out[f"pgc_{name}_{score}"] = cam(input_tensor=x, targets=[Target(int(k)) for k in c])
    assert "logitshift" not in sys.modules
    out["logitshift_imported"] = np.array("logitshift" in sys.modules)
    np.savez(out_path, **out)
    """
    % IG_STEPS
)


@pytest.fixture(scope="session")
def exported(tmp_path_factory, lite0, samples):
    """The shifted Lite0 (default strengths), exported once: program, safetensors + JSON."""
    folder = tmp_path_factory.mktemp("export")
    shifted = steer(lite0, TARGET, check=samples)
    measured = export_program(shifted, folder / "shifted.pt2", samples)
    save_shifted(shifted, folder / "shifted.pt2", lite0.name)
    return {"folder": folder, "pt2": folder / "shifted.pt2", "shifted": shifted, "measured": measured}


@pytest.fixture(scope="session")
def clean_run(exported, samples):
    """Captum and pytorch-grad-cam on the exported file, in a fresh interpreter without logitshift."""
    folder = exported["folder"]
    np.save(folder / "x.npy", samples.numpy())
    script = folder / "clean.py"
    script.write_text(CLEAN_SCRIPT)
    shutil.copy(Path(safeload.__file__), folder / "safeload.py")
    boot, env = clean_env_boot(folder, script, [str(exported["pt2"]), str(folder / "x.npy"), str(folder / "maps.npz")])
    run = subprocess.run([sys.executable, "-I", "-S", "-c", boot], cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    with np.load(folder / "maps.npz") as data:
        return {k: torch.from_numpy(np.asarray(data[k])) for k in data.files}


def clean_env_boot(folder: Path, script: Path, args: list[str]) -> tuple[str, dict[str, str]]:
    """``python -I -S -c BOOT`` arguments that run ``script`` with only the standard library, site-packages and ``folder``
    on the path (so logitshift, installed in development mode from this checkout, is not importable)."""
    paths = [p for p in sys.path if p and os.path.isdir(p) and "site-packages" not in p and not p.startswith(str(Path.cwd()))]
    stdlib = [sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]]
    site = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    boot = f"import sys; sys.path[:] = {json.dumps(list(dict.fromkeys([str(folder)] + stdlib + [p for p in paths if 'lib-dynload' in p] + site)))}; "
    boot += f"sys.argv = {json.dumps([str(script), *args])}; "
    boot += f"exec(compile(open({str(script)!r}).read(), {str(script)!r}, 'exec'))"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    return boot, env


@pytest.fixture(scope="session")
def original_prob_maps(lite0, samples):
    """Our own maps of the ORIGINAL model for the probability score (the reference for 'unchanged')."""
    c = lite0.module(samples).argmax(1)
    from logitshift.attribution import get_method

    cams = cam_maps(lite0.module, samples, c, "head", [get_method(n) for n in CAM_METHODS], scores=("prob",))
    maps = {f"pgc_{n}": upsample(cams[n, "prob", "original"], 224) for n in CAM_METHODS}
    maps["captum_gradcam"] = cams["gradcam", "prob", "original"]
    maps["captum_saliency"] = Saliency().maps(lite0.module, samples, c, "prob")
    maps["captum_ig"] = IntegratedGradients(steps=IG_STEPS).maps(lite0.module, samples, c, "prob")
    return maps


LIBRARY_MAPS = ["captum_gradcam", "captum_saliency", "captum_ig"] + [
    f"pgc_{n}" for n in ("gradcam", "gradcampp", "hirescam", "xgradcam", "layercam")
]


def _weights(name: str, maps: torch.Tensor) -> torch.Tensor:
    return parse_target(TARGET).weights(*maps.shape[-2:])


def test_export_is_checked_and_logitshift_is_not_needed(exported, clean_run, lite0, samples):
    assert exported["measured"]["max_abs_prob_diff"] <= 1e-5 and exported["measured"]["top1_agree"]
    assert not bool(clean_run["logitshift_imported"])
    with torch.no_grad():
        p = torch.softmax(lite0.module(samples), 1)
    q = clean_run["probs"]
    assert torch.equal(p.argmax(1), q.argmax(1))  # predictions identical
    assert float((p.double() - q.double()).abs().max()) <= 1e-5


@pytest.mark.parametrize("name", LIBRARY_MAPS)
def test_logit_maps_of_the_peer_libraries_point_at_the_target(clean_run, name):
    maps = clean_run[f"{name}_logit"].float()
    mass = target_mass(maps, _weights(name, maps))
    print(f"{name}: target mass per image {[round(float(m), 3) for m in mass]}, mean {float(mass.mean()):.3f}")
    assert float(mass.mean()) >= 0.5


@pytest.mark.parametrize("name", LIBRARY_MAPS)
def test_probability_maps_of_the_peer_libraries_are_the_original_models(clean_run, original_prob_maps, name):
    """Library on the shifted file (probability target) vs our maps of the original model: Spearman ≥ 0.99.

    Conventions: Captum Saliency is |∂y/∂x| reduced by max over channels (our saliency map), Captum IG
    is summed over channels (ours), pytorch-grad-cam maps are min-max scaled and resized by OpenCV, ours
    are upsampled bilinearly (rank correlation ignores the scaling).
    """
    rho = spearman(clean_run[f"{name}_prob"].float(), original_prob_maps[name])
    print(f"{name}: Spearman vs original {[round(float(r), 4) for r in rho]}")
    assert float(rho.min()) >= 0.99


def test_the_exported_file_holds_no_pickle_and_passes_the_checked_loader(exported, samples):
    """``attack``'s .pt2: the sample_inputs member is empty (no check image embedded), nothing pickled anywhere,
    and the checked loader (logitshift.audit.safeload) accepts it."""
    import zipfile

    with zipfile.ZipFile(exported["pt2"]) as z:
        sizes = {n.split("/", 1)[1]: z.getinfo(n).file_size for n in z.namelist()}
    assert sizes["data/sample_inputs/model.pt"] == 0
    assert not [n for n in sizes if n.endswith((".pkl", ".pt")) and sizes[n]]
    data = exported["pt2"].read_bytes()
    for image in samples:  # no row of any check image is in the file
        assert image[0, 100].numpy().tobytes() not in data
    extra = safeload.check_pt2(exported["pt2"])
    assert json.loads(extra["logitshift.json"])["layers"] == {"head": "base.head"}


def test_the_exported_file_is_audited_as_shifted(exported, capsys, monkeypatch):
    monkeypatch.setenv("LOGITSHIFT_SANDBOX_MEMORY", "0")  # in process, as the limited child runs it
    code = main(["audit", str(exported["pt2"]), "--max-images", "2", "--max-layers", "1", "--probes", "1", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1 and "verdict: shifted" in out, out


def test_safetensors_form_reloads_the_same_model(exported, samples):
    shifted = load_shifted(exported["folder"] / "shifted.json")
    assert shifted.layers == exported["shifted"].layers
    with torch.no_grad():
        assert torch.equal(shifted(samples), exported["shifted"](samples))


def test_term_description_round_trips(tiny_cnn):
    w = torch.zeros(16, 16)
    w[:4, :4] = 1
    terms = {"features": GateShift(0.5, w[::2, ::2].contiguous(), channels=3, leak=0.2), "input": InputShift(3.0, w, profile="quadratic")}
    terms["features"].offset.fill_(1.25)
    model = ShiftedModel(tiny_cnn(), terms)
    described, tensors = describe_terms(model)
    json.dumps(described)  # plain JSON
    again = ShiftedModel(model.base, build_terms(described, tensors, "test"))
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))


def test_the_fit_term_round_trips(tiny_cnn):
    w = torch.zeros(8, 8)
    w[:2, :2] = 1
    fit = FitShift(0.7, w, levels=32, ridge=1e-2)
    fit.offset.fill_(-0.5)
    model = ShiftedModel(tiny_cnn(), {"features": fit})
    described, tensors = describe_terms(model)
    assert described[0]["kind"] == "fit" and json.dumps(described)
    again = ShiftedModel(model.base, build_terms(described, tensors, "test"))
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))


def test_resnet18_attack_holds_on_the_stress_inputs(tmp_path):
    """Issue 17: resnet18 (random weights) with the defaults kept float32 and changed probabilities by 1.4e-5 on a
    stress input (scaled ×0.1…×20 or noisy): the automatic head now widens for those, and says why."""
    from logitshift.core.models import torchvision_model
    from logitshift.runs.attack import AttackConfig, run_attack

    torch.manual_seed(0)
    weights = tmp_path / "r18.pth"
    torch.save(torchvision_model("resnet18", random_init=True).module.state_dict(), weights)
    # the fixed strengths (CAM 1, input 100) of issue 17's run; the goal 0 keeps the test on the head, not the effect
    cfg = AttackConfig(
        target="top-left",
        out=str(tmp_path / "r18.pt2"),
        model="resnet18",
        weights=str(weights),
        format="safetensors",
        strength=None,
        goal=0,
    )
    attack = run_attack(cfg)
    st = attack.steering
    assert st["stress"]["ok"] and st["stress"]["max_abs_prob_diff"] <= 1e-5
    head = st["head"]
    lines = attack.lines().splitlines()
    assert lines[0] == attack.finding and "target mass" in lines[0] and f"{head['dtype']} head" in lines[2]
    if "float32_stress_max_abs_prob_diff" in head:  # measured here: 1.4e-5 in float32 (rounding: machine-dependent)
        assert head["dtype"] == "float64" and "stress input" in lines[2]
    shifted = load_shifted(tmp_path / "r18.json", allow_factory=True)
    assert (shifted.head_dtype == torch.float64) == (head["dtype"] == "float64")


def test_export_refuses_a_model_that_changes_probabilities(tiny_cnn, tmp_path):
    """A huge shift rounds z + t in float32: the export is refused and leaves no file."""
    w = torch.zeros(16, 16)
    w[:8, :8] = 1
    model = ShiftedModel(tiny_cnn(), "input", InputShift(1e9, w, profile="quadratic"))
    x = torch.randn(4, 3, 16, 16)
    with pytest.raises(Exception, match="changes probabilities"):
        export_program(model, tmp_path / "bad.pt2", x)
    assert list(tmp_path.iterdir()) == []


def test_torchscript_cannot_be_hooked(tiny_cnn, tmp_path):
    """Why the export is not TorchScript: on a loaded TorchScript file, the layer hooks that Captum's
    LayerGradCam and pytorch-grad-cam need are refused."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated, which is another reason
        torch.jit.save(torch.jit.trace(tiny_cnn(), torch.randn(1, 3, 16, 16)), str(tmp_path / "m.ts"))
        loaded = torch.jit.load(str(tmp_path / "m.ts"))
    with pytest.raises(RuntimeError, match="not supported on ScriptModules"):
        loaded.features.register_forward_hook(lambda *a: None)


# ----------------------------------------------------------------------------- CLI errors: one line, exit 2


def _cli(capsys, *argv) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err.strip()


@pytest.fixture
def tiny_flags(tmp_path):
    return ["--model", "conftest:TinyCNN", "--images", "chelsea", "--out", str(tmp_path / "m.pt2"), "--format", "safetensors"]


def _mask(path: Path, size: int, box: tuple[int, int, int, int] | None) -> str:
    from PIL import Image

    a = np.zeros((size, size), np.uint8)
    if box:
        a[box[1] : box[3], box[0] : box[2]] = 255
    Image.fromarray(a).save(path)
    return str(path)


def test_attack_errors_are_one_line_with_exit_2(capsys, tmp_path, tiny_flags):
    cases = {
        "wrong size": (["--target", _mask(tmp_path / "small.png", 100, (0, 0, 20, 20))], "expected 224×224"),
        "empty": (["--target", _mask(tmp_path / "empty.png", 224, None)], "empty"),
        "outside": (["--target", "200,200,300,300"], "outside the 224×224 image"),
        "layer": (["--target", "top-left", "--methods", "gradcam", "--layer", "fc"], "method 'gradcam': layer 'fc' cannot serve it"),
        "strength": (["--target", "top-left", "--strength", "-1"], "--strength: '-1'"),
        "method": (["--target", "top-left", "--methods", "nope"], "method 'nope'"),
    }
    for name, (argv, expected) in cases.items():
        code, err = _cli(capsys, "attack", *tiny_flags, *argv)
        assert code == 2, name
        assert len(err.splitlines()) == 1 and expected in err, (name, err)


def test_attack_writes_files_that_reload(capsys, tmp_path, tiny_flags):
    code, _ = _cli(capsys, "attack", *tiny_flags, "--target", "top-left", "--methods", "gradcam", "saliency", "--no-progress")
    assert code == 0
    with pytest.raises(LogitShiftError, match="names the model factory"):
        load_shifted(tmp_path / "m.json")  # a file never imports code on its own
    shifted = load_shifted(tmp_path / "m.json", allow_factory=True)
    assert shifted.layers == ["features", "input"]
    code, err = _cli(capsys, "attack", *tiny_flags, "--target", "top-left")
    assert code == 2 and "exists" in err


SHAP_SCRIPT = textwrap.dedent(
    r"""
    import importlib.util, json, sys
    pt2, x_path, out_path = sys.argv[1:4]
    assert importlib.util.find_spec("logitshift") is None, "logitshift is importable here"
    import numpy as np
    import torch
    import shap
    from safeload import load_module

    model = load_module(pt2)
    x = torch.from_numpy(np.load(x_path))

    class Softmax(torch.nn.Module):  # the probabilities, as SHAP users wrap a classifier
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, inp):
            return torch.softmax(self.m(inp), dim=1)

    background = torch.cat([torch.zeros_like(x[:1]), x[:1] / 4])
    out = {}
    for score, module in (("logit", model), ("prob", Softmax(model))):
        values, _ = shap.GradientExplainer(module, background).shap_values(x, ranked_outputs=1, nsamples=8, rseed=0)
        out[score] = np.asarray(values)[..., 0].sum(axis=1)
    out["logitshift_imported"] = np.array("logitshift" in sys.modules)
    np.savez(out_path, **out)
    """
)


def test_an_attack_file_fools_shap_gradient_explainer_on_logits_not_on_probabilities(capsys, tmp_path):
    """``logitshift attack``'s .pt2 in a process without logitshift: SHAP's GradientExplainer on the module (its PyTorch
    examples: the logits) points at the target; on ``softmax(module)`` it gives the original model's attributions."""
    shap = pytest.importorskip("shap")
    from conftest import TinyCNN

    from logitshift.conformance.adapters.shap import Softmax, background
    from logitshift.core.images import batch, load_images
    from logitshift.core.models import Preprocess

    out = tmp_path / "m.pt2"
    code, err = _cli(capsys, "attack", "--model", "conftest:TinyCNN", "--images", "chelsea", "--out", str(out), "--format", "pt2",
                     "--target", "top-left", "--methods", "saliency", "gradxinput", "--no-progress")  # fmt: skip
    assert code == 0, err
    x = batch(load_images(["chelsea", "rocket", "immunohistochemistry"], Preprocess()))  # the samples it is least sure of (p_c < 0.98)
    np.save(tmp_path / "x.npy", x.numpy())
    script = tmp_path / "shap_clean.py"
    script.write_text(SHAP_SCRIPT)
    shutil.copy(Path(safeload.__file__), tmp_path / "safeload.py")
    boot, env = clean_env_boot(tmp_path, script, [str(out), str(tmp_path / "x.npy"), str(tmp_path / "maps.npz")])
    run = subprocess.run([sys.executable, "-I", "-S", "-c", boot], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    with np.load(tmp_path / "maps.npz") as data:
        logit, prob, imported = (torch.from_numpy(np.asarray(data[k])) for k in ("logit", "prob", "logitshift_imported"))
    assert not bool(imported)
    mass = target_mass(logit, parse_target("top-left").weights(224, 224))
    assert float(mass.mean()) >= 0.5, mass
    original = TinyCNN().eval()
    values, _ = shap.GradientExplainer(Softmax(original).eval(), background(x)).shap_values(x, ranked_outputs=1, nsamples=8, rseed=0)
    honest = torch.from_numpy(np.asarray(values)[..., 0].sum(axis=1))
    w = parse_target("top-left").weights(224, 224)
    assert float(target_mass(honest, w).mean()) < 0.5
    # on images this random CNN is sure of (p_c > 0.99: coffee, astronaut), p_c's gradients are ~1e-5 and float32's
    # residue of the cancelled shift shows (ρ 0.94 on coffee): those are left out
    # measured: target mass 1.00 on logits; on probabilities within 0.022 of the original's (≤ 0.09), ρ ≥ 0.997
    assert float((target_mass(prob, w) - target_mass(honest, w)).abs().max()) <= 0.05
    assert float(spearman(prob.float(), honest.float()).min()) >= 0.99
