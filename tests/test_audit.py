"""``logitshift audit``: clean models pass, shifted ones are flagged, bad inputs fail cleanly.

The model files are written here the way the export command and users write
them: a ``torch.export`` program (``.pt2``) and TorchScript. Small random
CNNs at 32 px keep every audit well under a second of compute.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from conftest import TinyCNN  # noqa: E402

from logitshift.audit import THRESHOLD, audit_model, candidate_layers, load_file  # noqa: E402
from logitshift.cli import main  # noqa: E402
from logitshift.errors import LogitShiftError  # noqa: E402
from logitshift.shift import PaperShift, RegionShift, ShiftedModel  # noqa: E402
from logitshift.targets import parse_target  # noqa: E402

SIZE = 32


def images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def region_shifted(base: nn.Module, strength: float = 1.0) -> ShiftedModel:
    return ShiftedModel(base, "features", RegionShift(strength, parse_target("top-left", SIZE).weights(16, 16)))


def export(model: nn.Module, path: Path) -> Path:
    torch.export.save(torch.export.export(model, (images(1),)), str(path))
    return path


def test_honest_models_are_clean_and_shifted_ones_are_flagged_where_the_shift_acts():
    x = images()
    for seed in range(3):
        base = TinyCNN(10, 8, seed)
        clean = audit_model(base, x)
        assert clean.verdict == "clean" and clean.score < THRESHOLD, (seed, clean.score)
        assert [e.layer for e in clean.evidence][0] == "input"
        shifted = audit_model(region_shifted(base), x)
        assert shifted.verdict == "shifted" and shifted.score > 10 * THRESHOLD, (seed, shifted.score)
    # a shift read at the first conv leaves the later layers' gradients alone: κ jumps only up to it
    early = audit_model(ShiftedModel(base, "features.0", PaperShift(1.0)), x)
    by_layer = {e.layer: e.kappa_max for e in early.evidence}
    assert by_layer["base.features.0"] > THRESHOLD and by_layer["input"] > THRESHOLD
    assert by_layer["base.features"] < THRESHOLD


def test_candidate_layers_name_each_feature_map_once_and_subsample():
    base = TinyCNN(10, 8, 0)
    # features.3 (the last ReLU) returns the very tensor of `features`: named once, by the container
    assert candidate_layers(base, images(1)) == ["features.0", "features.1", "features.2", "features"]
    assert candidate_layers(base, images(1), max_layers=2) == ["features.0", "features"]


def test_cli_exit_codes_and_outputs_for_exported_files(tmp_path, capsys):
    base = TinyCNN(10, 8, 1)
    clean = export(base, tmp_path / "clean.pt2")
    shifted = export(region_shifted(base), tmp_path / "shifted.pt2")
    assert main(["audit", str(clean), "--size", str(SIZE), "--images", "chelsea", "coffee", "--no-progress"]) == 0
    assert "verdict: clean" in capsys.readouterr().out
    out = tmp_path / "run"
    code = main(["audit", str(shifted), "--size", str(SIZE), "--images", "chelsea", "coffee", "--out", str(out), "--no-progress"])
    assert code == 1
    assert "verdict: shifted" in capsys.readouterr().out
    report = json.loads((out / "audit.json").read_text())
    assert report["verdict"] == "shifted" and report["score"] > THRESHOLD
    assert report["evidence"][0]["layer"] == "input" and len(report["evidence"]) > 1
    assert (out / "audit.png").stat().st_size > 1000
    # a second run into the same folder is refused without --force
    assert main(["audit", str(shifted), "--size", str(SIZE), "--images", "chelsea", "--out", str(out), "--no-progress"]) == 2


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_torchscript_files_are_audited_through_the_input_gradient(tmp_path, capsys):
    base = TinyCNN(10, 8, 2)
    path = tmp_path / "shifted.ts"
    with torch.no_grad():
        torch.jit.trace(region_shifted(base), images(1)).save(str(path))
    module, hookable = load_file(path)
    assert not hookable
    assert main(["audit", str(path), "--size", str(SIZE), "--images", "chelsea", "coffee", "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert "input gradient only" in captured.err and "verdict: shifted" in captured.out


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("logitshift audit: error:"), err
    return err


def test_unloadable_files_fail_with_one_line_and_exit_2(tmp_path, capsys):
    junk = tmp_path / "junk.pt2"
    junk.write_bytes(b"not a model at all")
    assert main(["audit", str(junk)]) == 2
    assert "junk.pt2" in one_line_error(capsys)
    pickled = tmp_path / "state.pth"
    torch.save(TinyCNN(10, 4, 0).state_dict(), pickled)  # a zip, but a pickle: never loaded
    assert main(["audit", str(pickled)]) == 2
    assert "state.pth" in one_line_error(capsys)
    assert main(["audit", str(tmp_path / "missing.pt2")]) == 2
    assert "not found" in one_line_error(capsys)


def test_a_model_without_a_spatial_layer_fails_with_one_line_and_exit_2(tmp_path, capsys):
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, 16), nn.ReLU(), nn.Linear(16, 10)).eval()
    path = export(mlp, tmp_path / "mlp.pt2")
    assert main(["audit", str(path), "--size", str(SIZE), "--images", "chelsea"]) == 2
    assert "no layer outputs a spatial feature map" in one_line_error(capsys)
    with pytest.raises(LogitShiftError, match="spatial"):
        audit_model(mlp, images())
