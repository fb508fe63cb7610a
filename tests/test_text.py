"""Text classifiers: the fortunes corpus, a tiny BERT trained here, token maps against Captum, the token shift's law."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logitshift.core.errors import LogitShiftError
from logitshift.core.text import FORTUNES_DIR, load_corpus, load_text_model, random_model, read_texts, split, train_classifier

pytestmark = pytest.mark.skipif(
    not (FORTUNES_DIR / "computers").is_file(), reason="Debian's fortunes packages missing (make test installs them)"
)

TOPICS = ("computers", "politics", "science")


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A tiny BERT trained here in seconds on three topics (60 quotations each), loaded from its folder."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    result = train_classifier(folder, TOPICS, per_class=60, epochs=6, hidden=32, layers=1, vocab_size=400, max_length=32)
    return load_text_model(str(folder)), result


@pytest.fixture(scope="session")
def texts():
    _, test = split(load_corpus(TOPICS, per_class=60))
    return test.texts[:6]


def test_corpus_split_is_deterministic_stratified_and_disjoint():
    corpus = load_corpus(TOPICS, per_class=50)
    a_train, a_test = split(corpus, seed=3)
    b_train, b_test = split(corpus, seed=3)
    assert a_test.texts == b_test.texts and a_train.texts == b_train.texts
    assert not set(a_test.texts) & set(a_train.texts) - {t for t in corpus.texts if corpus.texts.count(t) > 1}
    assert [a_test.labels.count(c) for c in range(3)] == [10, 10, 10]
    assert split(corpus, seed=4)[1].texts != a_test.texts


def test_missing_corpus_is_one_line_error(tmp_path):
    with pytest.raises(LogitShiftError, match="fortunes"):
        load_corpus(("computers",), root=tmp_path)


def test_trained_folder_loads_in_plain_transformers(tiny, texts):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model, result = tiny
    folder = model.info["folder"]
    assert 0 <= result.test_accuracy <= 1 and result.test_size == 3 * round(0.2 * 60)
    plain = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    ids = model.encode(texts[:1])[0]
    assert tok(texts[0], truncation=True)["input_ids"] == ids.tolist()
    with torch.no_grad():
        ours = model.module(model.embed(ids))
        theirs = plain(input_ids=ids[None]).logits
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def _captum_forward(hf, prob: bool):
    def f(embeds):
        z = hf(inputs_embeds=embeds).logits
        return z.softmax(-1) if prob else z

    return f


@pytest.mark.parametrize("score", ["logit", "prob"])
def test_token_maps_match_captum(tiny, texts, score):
    from captum.attr import InputXGradient, LayerIntegratedGradients, Saliency

    from logitshift.attribution.tokens import token_maps

    model, _ = tiny
    ids = model.encode(texts[:3])
    reference = [torch.tensor([t[0].item(), *[model.tokenizer.pad_token_id] * (len(t) - 2), t[-1].item()]) for t in ids]
    out = token_maps(model.module, model, ids, ["saliency", "gradxinput", "ig"], [score], steps=20, reference=reference)
    hf = model.hf
    for i, t in enumerate(ids):
        emb = model.embeddings(t[None]).detach()
        c = out.targets[i]
        forward = _captum_forward(hf, score == "prob")
        sal = Saliency(forward).attribute(emb.clone().requires_grad_(), target=c, abs=True)[0].amax(-1)
        gxi = InputXGradient(forward).attribute(emb.clone().requires_grad_(), target=c)[0].sum(-1)

        def by_ids(x, prob=score == "prob"):
            z = hf(input_ids=x).logits
            return z.softmax(-1) if prob else z

        lig = (
            LayerIntegratedGradients(by_ids, model.embeddings)
            .attribute(t[None], baselines=reference[i][None], target=c, n_steps=20)[0]
            .sum(-1)
        )
        for name, theirs in (("saliency", sal), ("gradxinput", gxi), ("ig", lig)):
            ours = out.maps[(name, score, "original")][i]
            torch.testing.assert_close(
                ours, theirs.detach(), rtol=1e-4, atol=1e-6 * float(theirs.detach().abs().max()), msg=f"{name} text {i}"
            )


def test_token_targets_refuse_bad_input(tiny):
    from logitshift.shift.tokens import token_target

    model, _ = tiny
    for bad, what in (
        ("pos:5-3", "pos:A"),
        ("pos:x", "pos:A"),
        ("re:(", "regular expression"),
        ("re:^qqqzzz$", "vocabulary"),
        ("ξψω", "vocabulary"),
    ):
        with pytest.raises(LogitShiftError, match=what):
            token_target(bad, model)
    assert token_target("pos:2-4", model)["positions"] == (2, 4)
    word = model.tokens(model.encode(["the computer"])[0])[1]
    assert token_target(word, model)["embeddings"].shape[0] >= 1


def _check_law(model, ids, target, methods=("saliency", "gradxinput", "ig")):
    from logitshift.shift.tokens import steer_tokens, token_effect

    shifted = steer_tokens(model, target, ids, list(methods), steps=4)
    s = shifted.steering
    assert s["max_abs_prob_diff"] <= 1e-5 and s["stress"]["max_abs_prob_diff"] <= 1e-5
    for e in token_effect(model, shifted, ids, list(methods), steps=4):
        assert e.shifted_mass >= 0.5, e
        assert min(e.spearman.values()) >= 0.999, e
    return shifted


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lo=st.integers(1, 4), width=st.integers(0, 2))
def test_token_shift_law_on_trained_model(tiny, texts, lo, width):
    """Any position target: logit maps reach the goal on it, probabilities and immune maps unchanged."""
    model, _ = tiny
    _check_law(model, model.encode(texts[:4]), f"pos:{lo}-{lo + width}")


def test_token_shift_word_target_and_random_distilbert(tiny, texts):
    model, _ = tiny
    ids = model.encode(texts)
    word = next(tok for tok in model.tokens(ids[0])[1:-1] if tok.isalpha())
    shifted = _check_law(model, ids, word)
    x = model.embed(ids[0])
    w = shifted.shifts[0].weights(x)[0]
    assert w.sum() >= 1 and all(model.tokens(ids[0])[j] == word for j in torch.nonzero(w)[:, 0].tolist())
    rnd = random_model("distilbert", hidden=32, layers=1, tokenizer=model.tokenizer)
    _check_law(rnd, rnd.encode(texts), "pos:2-3")


def test_read_texts(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("first text\n\n second text \n")
    assert read_texts([str(f), "third"]) == ["first text", "second text", "third"]
    with pytest.raises(LogitShiftError, match="no such file"):
        read_texts([str(tmp_path / "missing.txt")])
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(LogitShiftError, match="no text"):
        read_texts([str(tmp_path / "empty.txt")])


def test_weights_only_edit_is_rank_one_on_the_head_and_loads_in_plain_transformers(tiny, texts, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from logitshift.core.text import TextModel
    from logitshift.shift.textweights import classifier_of, prob_gap, weights_only

    model, _ = tiny
    ids = model.encode(texts)
    wo = weights_only(model, "pos:2-3", ids, steps=4)
    assert wo.max_abs_prob_diff <= 1e-5
    wo.model.hf.save_pretrained(tmp_path)
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path, local_files_only=True)
    before, after = model.hf.state_dict(), plain.state_dict()
    assert before.keys() == after.keys()
    name, _ = classifier_of(model.hf)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == [f"{name}.weight"]
    delta = after[f"{name}.weight"] - before[f"{name}.weight"]
    torch.testing.assert_close(
        delta, delta[:1].expand_as(delta), rtol=0, atol=1e-5 * float(delta.abs().max())
    )  # every row gains the same u
    assert prob_gap(model, TextModel(plain, model.tokenizer, "reloaded", model.classes), ids) <= 1e-5


def test_cli_demo_and_weights_only_attack_on_texts(tiny, texts, tmp_path, capsys):
    import json

    from logitshift.cli import main

    model, _ = tiny
    folder = model.info["folder"]
    f = tmp_path / "texts.txt"
    f.write_text("\n".join(texts[:3]) + "\n")
    assert main(["demo", "--texts", str(f), "--model", folder, "--target", "pos:1-2", "--steps", "2", "--out", str(tmp_path / "demo")]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert first == summary["finding"] and first.startswith("The token shift")
    assert all((tmp_path / "demo" / f"text0{i}.png").stat().st_size > 0 for i in (1, 2, 3))
    assert min(e["shifted_mass"] for e in summary["effects"]) >= 0.5 and summary["steering"]["stress"]["max_abs_prob_diff"] <= 1e-5
    out = tmp_path / "attacked"
    args = ["attack", "--texts", str(f), "--model", folder, "--target", "pos:1-2", "--weights-only", "--steps", "2", "--out", str(out)]
    assert main(args) == 0
    record = json.loads((out / "attack.json").read_text())
    assert capsys.readouterr().out.splitlines()[0] == record["finding"]
    assert record["max_abs_prob_diff"] <= 1e-5 and (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert main(args) == 2  # --out not empty without --force
    assert "not empty" in capsys.readouterr().err
    assert main(["attack", "--texts", "a text", "--model", folder, "--target", "pos:1", "--out", str(tmp_path / "x")]) == 2
    assert "--weights-only" in capsys.readouterr().err


def test_audit_on_text_embeddings_flags_the_token_shift_not_the_honest_model(tiny, texts):
    from logitshift.audit.verdict import audit_model
    from logitshift.shift.tokens import steer_tokens

    model, _ = tiny
    ids = model.encode(texts)
    n = min(len(t) for t in ids)
    ids = [torch.cat([t[: n - 1], t[-1:]]) for t in ids]
    x = torch.cat([model.embed(t) for t in ids])
    assert audit_model(model.module, x, require_spatial=False).verdict == "clean"
    shifted = steer_tokens(model, "pos:1-2", ids, steps=4)
    assert audit_model(shifted, x, require_spatial=False).verdict == "shifted"
