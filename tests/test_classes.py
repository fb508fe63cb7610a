"""Which classes are explained (issue 18 item 4): ``--class`` by name or index, ``--top-k``, ``--labels``;
repeats collapse; outputs are named uniquely per input path. A tiny random CNN (tests/check_fixtures.py), 64 px."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from check_fixtures import small
from PIL import Image

from logitshift.cli import main
from logitshift.core.errors import LogitShiftError
from logitshift.core.images import batch, collect_images, load_images, unique_names
from logitshift.core.labels import read_labels
from logitshift.runs.demo import DemoConfig, run_demo

# --goal 0: these tests are about classes, not about the shift's effect on this small random model (tests/test_front.py)
MODEL = ["--model", "check_fixtures:small", "--no-progress", "--device", "cpu", "--goal", "0"]
NAMES = [f"kind{i}" for i in range(10)]


@pytest.fixture
def photos(tmp_path):
    """a/x.png and b/x.png (same file name, different pictures), c/y.png, and a names file for the 10 classes."""
    rng = np.random.default_rng(0)
    paths = []
    for folder, name in (("a", "x"), ("b", "x"), ("c", "y")):
        (tmp_path / folder).mkdir()
        path = tmp_path / folder / f"{name}.png"
        Image.fromarray(rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    (tmp_path / "names.txt").write_text("\n".join(NAMES) + "\n")
    return tmp_path, paths


def probabilities(paths: list[str]) -> torch.Tensor:
    loaded = small()
    with torch.no_grad():
        return torch.softmax(loaded.module(batch(load_images(paths, loaded.preprocess))), dim=1)


def demo(tmp_path, capsys, *argv) -> dict:
    out = tmp_path / "run"
    code = main(["demo", *MODEL, "--out", str(out), "--force", *argv])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads((out / "summary.json").read_text())


def demo_api(tmp_path, **options) -> dict:
    """The same run through the API, without figures (the figures are the slow part)."""
    cfg = DemoConfig(
        model="check_fixtures:small", out=str(tmp_path / "api"), force=True, figures=False, progress=False, device="cpu", goal=0, **options
    )
    return run_demo(cfg)


def test_unique_names_per_input_path():
    keys = ["/r/a/x.png", "/r/b/x.png", "/r/c/y.png", "sample:chelsea", "/q/chelsea.png"]
    assert unique_names(keys, ["x", "x", "y", "chelsea", "chelsea"]) == ["a-x", "b-x", "y", "chelsea", "q-chelsea"]
    assert unique_names(["/r/a/s/x.png", "/r/b/s/x.png"], ["x", "x"]) == ["a-s-x", "b-s-x"]
    names = unique_names(["/r/x.png", "/r/x.jpg"], ["x", "x"])
    assert len(set(names)) == 2


def test_two_files_with_one_name_give_two_figures(photos, capsys):
    tmp_path, paths = photos
    summary = demo(tmp_path, capsys, "--images", str(tmp_path / "a"), str(tmp_path / "b"))
    assert summary["images"] == ["a-x", "b-x"]
    figures = sorted({r["figure"] for r in summary["results"]})
    assert len(figures) == 2 and all((tmp_path / "run" / f).is_file() for f in figures)


def test_repeated_class_collapses_to_one_row(photos):
    tmp_path, paths = photos
    # the same class three ways: index twice, and by name
    summary = demo_api(tmp_path, images=paths, class_names=str(tmp_path / "names.txt"), classes=["3", "3", "kind3"])
    for name in summary["images"]:
        rows = [r for r in summary["results"] if r["image"] == name]
        classes = [r["class"] for r in rows]
        assert len(classes) == len(set(classes)), classes  # also when 3 is the prediction
        assert 3 in classes and classes.count(3) == 1
        assert {r["class_name"] for r in rows if r["class"] == 3} == {"kind3"}


def test_class_by_name_needs_names_and_says_so(photos, capsys):
    tmp_path, paths = photos
    code = main(["demo", *MODEL, "--out", str(tmp_path / "run"), "--images", paths[0], "--class", "kind3"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "class 'kind3'" in err


def test_top_k_explains_each_images_k_most_probable_classes(photos, capsys):
    tmp_path, paths = photos
    paths = paths[:2]
    summary = demo(tmp_path, capsys, "--images", *paths, "--top-k", "3")
    probs = probabilities(paths)
    for i, name in enumerate(summary["images"]):
        rows = [r for r in summary["results"] if r["image"] == name]
        assert [r["class"] for r in rows] == probs[i].topk(3).indices.tolist()
        assert [r["rank"] for r in rows] == [1, 2, 3]
        assert [r["predicted"] for r in rows] == [True, False, False]
    assert summary["top_k"] == 3


def test_labels_file_csv_and_one_a_line(photos):
    tmp_path, paths = photos
    probs = probabilities(paths)
    # labels that are never the prediction, so each image gains exactly one row
    wanted = [int(p.argmin()) for p in probs]
    table = tmp_path / "labels.csv"
    with table.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        w.writerow(["c/y.png", NAMES[wanted[2]]])  # relative to the labels file, by name
        w.writerow([paths[0], wanted[0]])  # absolute, by index
        w.writerow(["b/x.png", str(wanted[1])])
        w.writerow(["elsewhere/z.png", "1"])  # an image not explained now: skipped
    lines = tmp_path / "labels.txt"
    lines.write_text("".join(f"{c}\n" for c in wanted))
    for labels in (table, lines):
        summary = demo_api(tmp_path, images=paths, class_names=str(tmp_path / "names.txt"), labels=str(labels))
        for i, name in enumerate(summary["images"]):
            rows = [r for r in summary["results"] if r["image"] == name]
            assert [r["class"] for r in rows] == [int(probs[i].argmax()), wanted[i]]
            assert [r["label"] for r in rows] == [False, True]


@pytest.mark.parametrize(
    "text, message",
    [
        ("0\n1\n", "2 labels for 3 images"),
        ("0\nzebra\n2\n", "line 2: class 'zebra'"),
        ("a/x.png,1\nb/x.png,1,2\n", "line 2: expected path,label"),
        ("a/x.png,1\nb/x.png,1\n", "no label for image"),
        ("0\n1\n99\n", "line 3: class '99': index out of range"),
    ],
)
def test_bad_labels_file_is_one_line_naming_file_and_line(photos, capsys, text, message):
    tmp_path, paths = photos
    bad = tmp_path / "bad.txt"
    bad.write_text(text)
    code = main(["demo", *MODEL, "--out", str(tmp_path / "run"), "--images", *paths, "--labels", str(bad)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"--labels {str(bad)!r}" in err and message in err, err
    assert not (tmp_path / "run" / "summary.json").exists()


def test_read_labels_matches_samples_and_names(tmp_path):
    items, _ = collect_images(["chelsea", "coffee"])
    path = tmp_path / "l.tsv"
    path.write_text("image\tlabel\nchelsea\t5\ncoffee\tkind7\n")
    assert read_labels(path, items, 10, NAMES) == {"sample:chelsea": 5, "sample:coffee": 7}
    with pytest.raises(LogitShiftError, match="no labels found"):
        (tmp_path / "empty.txt").write_text("# nothing\n\n")
        read_labels(tmp_path / "empty.txt", items, 10, NAMES)


def test_evaluate_rows_for_top_k_class_and_labels(photos, capsys):
    tmp_path, paths = photos
    probs = probabilities(paths)
    labels = tmp_path / "labels.txt"
    wanted = [int(p.argmin()) for p in probs]
    labels.write_text("".join(f"{c}\n" for c in wanted))
    out = tmp_path / "eval"
    argv = ["evaluate", *MODEL, "--images", *paths, "--out", str(out), "--workers", "0", "--no-plots", "--scores", "logit"]
    code = main([*argv, "--top-k", "2", "--class", "4", "--class", "4", "--labels", str(labels)])
    assert code == 0, capsys.readouterr().err
    with (out / "rows.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["variant"] == "original"]
    names = sorted({r["name"] for r in rows})
    assert names == ["a-x", "b-x", "y"]
    for i, path in enumerate(paths):
        got = [int(r["class"]) for r in rows if r["image"] == str(Path(path).resolve())]
        expected = list(dict.fromkeys(probs[i].topk(2).indices.tolist() + [4, wanted[i]]))
        assert sorted(got) == sorted(expected), (got, expected)  # one row per class, repeats collapsed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["top_k"] == 2 and summary["labels"] == str(labels) and summary["classes"] == ["4", "4"]


def test_labels_and_save_maps_together_over_several_batches(photos, capsys):
    """Each image's true label is explained in every batch, and the saved maps carry it (one batch per image)."""
    from logitshift.view.display import load_maps

    tmp_path, paths = photos
    wanted = [int(p.argmin()) for p in probabilities(paths)]
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"{c}\n" for c in wanted))
    maps = tmp_path / "maps.npz"
    argv = ["evaluate", *MODEL, "--images", *paths, "--out", str(tmp_path / "eval"), "--workers", "0", "--no-plots"]
    code = main(
        [*argv, "--scores", "logit", "--methods", "gradcam", "--batch-size", "1", "--labels", str(labels), "--save-maps", str(maps)]
    )
    assert code == 0, capsys.readouterr().err
    saved = load_maps(maps)
    for path, label in zip(paths, wanted):
        mine = [int(c) for im, c in zip(saved["image"], saved["class"]) if str(im) == str(Path(path).resolve())]
        assert label in mine, (path, label, mine)
