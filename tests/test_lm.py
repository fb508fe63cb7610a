"""Causal language models (issue 29): loading, next-token attributions against Captum, the shift, TransformerLens' centring.

Tiny random GPT-2 / Llama configs (random weights): seconds on CPU. The model trained here is
measured by benchmarks/lm.py, not here.
"""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from logitshift.attribution.lm import LM_IMMUNE, LM_SCORES, token_attributions, token_mass
from logitshift.core.errors import LogitShiftError
from logitshift.core.lm import NextToken, greedy, load_lm, random_lm
from logitshift.core.metrics import spearman
from logitshift.core.scores import score
from logitshift.shift.lm import ShiftedLM, center_unembed, position_weights, uncenter_unembed

V, L = 96, 12


def tiny(family: str = "gpt2", seed: int = 0):
    lm = random_lm(family, seed=seed, vocab_size=V, hidden=32, layers=2, heads=2)
    with torch.no_grad():  # token 0's embedding is the zero vector: the IG baseline as token ids (Captum's LayerIntegratedGradients)
        lm.model.get_input_embeddings().weight[0] = 0.0
    return lm


def prompts(n: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randint(1, V, (n, L), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def gpt2():
    return tiny("gpt2")


def test_folders_load_and_refuse(tmp_path, gpt2):
    gpt2.model.save_pretrained(tmp_path / "m")
    loaded = load_lm(str(tmp_path / "m"))
    ids = prompts(2)
    with torch.no_grad():
        assert torch.allclose(loaded.model(ids).logits, gpt2.model(ids).logits, atol=1e-5)
        fresh = load_lm(str(tmp_path / "m"), random_weights=True)  # the folder's config, new weights
        assert fresh.model.config.vocab_size == V
        assert not torch.allclose(fresh.model(ids).logits, gpt2.model(ids).logits, atol=1e-3)
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({**cfg, "model_type": "bert"}))
    for name, kw, words in [
        (str(tmp_path / "bert"), {}, "model_type 'bert'"),
        ("gpt2", {}, "--random-weights"),
        ("no-such-model", {}, "expected 'fortunes-gpt'"),
        (str(tmp_path), {}, "no config.json"),
    ]:
        with pytest.raises(LogitShiftError, match=words) as info:
            load_lm(name, **kw)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("s", ["logit", "logprob", "centered", "logitdiff"])
def test_ig_and_saliency_match_captum(gpt2, s):
    """Integrated Gradients = Captum's LayerIntegratedGradients on the embedding layer (baseline: token 0, the zero
    embedding); saliency = Captum's Saliency on the embeddings (max over dimensions of |∂s/∂e|)."""
    from captum.attr import LayerIntegratedGradients, Saliency

    ids = prompts()
    nt = NextToken(gpt2.model)
    x = gpt2.grid(ids).detach()
    with torch.no_grad():
        target = nt(x).argmax(1)
    contrast = torch.tensor([7])

    def s_of(z, t):
        return z[:, 0] * 0 + (z.gather(1, t.view(-1, 1))[:, 0] - z[:, 7]) if s == "logitdiff" else score(z, t, s)

    ours = token_attributions(nt, x, target, methods=("ig", "saliency"), scores=(s,), contrast=contrast, steps=16, raw=True)
    lig = LayerIntegratedGradients(
        lambda i: s_of(gpt2.model(i).logits[:, -1], target.repeat(i.shape[0] // 3)), gpt2.model.get_input_embeddings()
    )
    ref = lig.attribute(ids, baselines=torch.zeros_like(ids), n_steps=16)
    assert torch.allclose(ours["ig", s], ref.transpose(1, 2), atol=1e-6, rtol=1e-4)
    sal = Saliency(lambda e: s_of(nt(e), target)).attribute(x.clone().requires_grad_(True), abs=True)
    maps = token_attributions(nt, x, target, methods=("saliency",), scores=(s,), contrast=contrast)
    assert torch.allclose(maps["saliency", s], sal[:, :, 0].amax(1), atol=1e-7, rtol=1e-4)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_shift_steers_logit_attributions_and_keeps_the_distribution(family):
    lm = tiny(family)
    ids = prompts()
    chosen = [2, 3]
    shifted = ShiftedLM(lm.model, chosen, L, strength=1e3)
    with torch.no_grad():
        p, q = lm.model(ids).logits.softmax(-1), shifted(ids).logits.softmax(-1)
    assert (p - q).abs().max() <= 1e-5  # over the whole vocabulary, every position
    assert torch.equal(greedy(lm.model, ids, 32), greedy(shifted, ids, 32))
    x = lm.grid(ids).detach()
    with torch.no_grad():
        target = NextToken(lm.model)(x).argmax(1)
    kw = dict(scores=LM_SCORES, contrast=torch.tensor([7]), steps=16)
    honest = token_attributions(NextToken(lm.model), x, target, **kw)
    steered = token_attributions(shifted.next_token(), x, target, variant="shifted", **kw)
    w = position_weights(chosen, L)
    for (m, s), a in honest.items():
        if s == "logit":
            assert float((token_mass(steered[m, s], w) - token_mass(a, w)).min()) >= 0.5, m
        else:
            assert float(spearman(a, steered[m, s]).min()) >= 0.999, (m, s)


def test_center_unembed_is_an_accidental_shift(gpt2):
    """TransformerLens' centring: same probabilities; its raw-logit attributions are the centred score's,
    not the HF model's logit's; log-prob, centred and logit-difference attributions are unchanged."""
    import copy

    ids = prompts()
    tl = center_unembed(copy.deepcopy(gpt2.model))
    with torch.no_grad():
        z, zc = gpt2.model(ids).logits, tl(ids).logits
    assert (z.softmax(-1) - zc.softmax(-1)).abs().max() <= 1e-6
    assert torch.allclose(zc, z - z.mean(-1, keepdim=True), atol=1e-5)
    x = gpt2.grid(ids).detach()  # the centring unties the unembedding: the input embeddings are the same
    assert torch.equal(x, tl.get_input_embeddings()(ids).transpose(1, 2)[:, :, None])
    with torch.no_grad():
        target = NextToken(gpt2.model)(x).argmax(1)
    kw = dict(scores=LM_SCORES, contrast=torch.tensor([7]), steps=16)
    hf = token_attributions(NextToken(gpt2.model), x, target, **kw)
    lens = token_attributions(NextToken(tl), x, target, **kw)
    for m in ("saliency", "gradxinput", "ig"):
        assert float(spearman(hf[m, "logit"], lens[m, "logit"]).min()) < 0.999, m
        assert torch.allclose(lens[m, "logit"], hf[m, "centered"], atol=1e-6, rtol=1e-3), m
        for s in LM_IMMUNE:
            assert torch.allclose(lens[m, s], hf[m, s], atol=1e-6, rtol=1e-3), (m, s)


@settings(max_examples=8, deadline=None)
@given(scale=st.floats(0.01, 10.0), seed=st.integers(0, 2**16))
def test_centring_removes_every_unembedding_common_mode(gpt2, scale, seed):
    """Law: center_unembed(uncenter_unembed(m, u)) has the same unembedding as center_unembed(m), for any u;
    and the uncentred model's logits differ from the model's by one value per position (t = u·h)."""
    import copy

    u = scale * torch.randn(32, generator=torch.Generator().manual_seed(seed))
    m = uncenter_unembed(copy.deepcopy(gpt2.model), u)
    ids = prompts(2, seed=seed)
    with torch.no_grad():
        d = m(ids).logits - gpt2.model(ids).logits
    assert torch.allclose(d, d[..., :1].expand_as(d), atol=1e-4 * (1 + scale))
    a = center_unembed(m).get_output_embeddings().weight
    b = center_unembed(copy.deepcopy(gpt2.model)).get_output_embeddings().weight
    assert torch.allclose(a, b, atol=1e-5 * (1 + scale))


def test_bad_inputs_are_one_line(gpt2):
    nt = NextToken(gpt2.model)
    x = gpt2.grid(prompts()).detach()
    for call, words in [
        (lambda: token_attributions(nt, x, torch.tensor([1, 2, 3]), scores=("prob-ish",)), "score 'prob-ish'"),
        (lambda: token_attributions(nt, x, torch.tensor([1, 2, 3]), scores=("logitdiff",)), "contrast"),
        (lambda: token_attributions(nt, x, torch.tensor([1, 2, 3]), methods=("gradcam",)), "method 'gradcam'"),
        (lambda: position_weights([L], L), f"outside a prompt of {L}"),
        (lambda: nt(torch.zeros(1, 32, 10)), "N×D×1×L"),
    ]:
        with pytest.raises(LogitShiftError, match=words) as info:
            call()
        assert "\n" not in str(info.value)


def test_dla_adds_up_to_the_logit():
    """Law: the components' direct logit attributions + the final norm's bias term = the next-token logit (GPT-2, Llama)."""
    from logitshift.attribution.dla import component_names, dla, parts

    for family in ("gpt2", "llama"):
        lm = tiny(family)
        ids = prompts()
        with torch.no_grad():
            z = lm.model(ids).logits[:, -1]
        c = z.argmax(1)
        a = dla(lm.model, ids, c)
        assert a.shape == (3, len(component_names(lm.model))) == (3, 5)
        bias = getattr(parts(lm.model)[1], "bias", None)
        rest = (lm.model.get_output_embeddings().weight[c] * bias).sum(1) if bias is not None else 0.0
        assert torch.allclose(a.sum(1) + rest, z.gather(1, c[:, None])[:, 0], atol=1e-5)
        d = dla(lm.model, ids, c, "logitdiff", torch.tensor([7]))
        assert torch.allclose(d.sum(1), (z.gather(1, c[:, None])[:, 0] - z[:, 7]), atol=1e-5)


def with_tokenizer(seed: int = 0):
    from logitshift.core.lm import LanguageModel, _bpe

    texts = [
        "the quick brown fox jumps over the lazy dog",
        "a computer is a machine that computes",
        "never trust a program you did not write",
    ]
    tok = _bpe(texts * 4, 300)
    lm = random_lm("gpt2", seed=seed, vocab_size=len(tok), hidden=32, layers=2, heads=2)
    return LanguageModel(lm.model, tok, "tiny gpt2 (random weights)"), torch.stack(
        [lm_ids[:8] for lm_ids in (torch.tensor(tok(t)["input_ids"]) for t in texts[:2])]
    )


def test_lm_conformance_cells():
    from logitshift.conformance.lm import check_lm, lm_context, lm_explainers

    lm, ids = with_tokenizer()
    ctx = lm_context(lm, ids, steps=4, samples=4)
    chosen = [
        e
        for e in lm_explainers(["logitshift", "captum-llm", "dla"], ctx)
        if (e.library == "logitshift" and e.method == "ig")
        or e.method in ("LLMGradientAttribution(LayerIntegratedGradients)", "LLMAttribution(FeatureAblation)")
        or e.library == "dla"
    ]
    cells = {(c.library, c.method, c.target, c.construction): c for c in check_lm(ctx, chosen)}
    assert all(c.max_dp is not None and c.max_dp <= 1e-5 for c in cells.values())
    assert cells["logitshift", "ig", "logit", "token"].verdict == "fooled"
    # the centring changes a logit attribution by −mean_v ∂z_v (measured in test_center_unembed_is_an_accidental_shift);
    # it steers nothing, and on two 8-token prompts the ranks may survive it
    assert cells["logitshift", "ig", "logit", "center"].verdict in ("moved", "immune")
    assert cells["dla", "direct logit attribution", "logit", "unembedding"].verdict == "fooled"
    for key, c in cells.items():
        if key[2] != "logit":
            assert c.verdict == "immune", (key, c)
    assert len(cells) == 4 * 2 + 1 * 2 + 2 * 2 + 3 * 2  # ig × 4 scores, LIG, FeatureAblation × 2 targets, DLA × 3; two twins each


def test_check_lm_hidden_library_is_one_line(monkeypatch, capsys):
    import sys

    from logitshift.cli import main

    monkeypatch.setitem(sys.modules, "captum.attr", None)  # the library is hidden: importing it raises ImportError
    code = main(
        ["check", "--lm", "gpt2", "--random-weights", "--library", "captum-llm", "--prompts", "1", "--length", "6", "--no-progress"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "captum is not installed" in err and len(err.splitlines()) == 1
