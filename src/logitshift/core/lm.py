"""Causal language models: a small GPT-2 trained here on real text, local HF folders, random configs.

* **Trained here** (:data:`TRAINED`, ``"fortunes-gpt"``): a byte-level BPE tokenizer and a tiny
  ``GPT2LMHeadModel`` trained on Debian's ``fortunes`` quotations (the corpus of
  :mod:`logitshift.core.text`; every 10th quotation held out), seeded and deterministic on CPU,
  saved as a HuggingFace folder (``config.json``, ``model.safetensors``, ``tokenizer.json``,
  ``training.json`` with the held-out perplexity ``exp(mean next-token cross-entropy)``) in
  :func:`~logitshift.core.text.cache_dir`, built on first use.
* **Local folders**: any GPT-2 / Llama-style ``*ForCausalLM`` folder, read with
  ``trust_remote_code=False`` and ``local_files_only=True`` (nothing is downloaded);
  ``random_weights=True`` builds the folder's config with fresh weights.
* **Random configs**: ``"gpt2"`` / ``"llama"`` with :func:`random_lm` (``"gpt2-small"``: GPT-2
  small's sizes, 124 M parameters).
* **Explaining the next token**: :class:`NextToken` is the model seen from its token embeddings,
  laid out as an N×D×1×L "image" (D channels, a 1×L grid of positions), returning the logits of
  the token after the last position (N×V). The engine's input methods, its scores and the
  shift terms of :mod:`logitshift.shift.model` run on it unchanged; a map is one value per token.

Example::

    >>> lm = load_lm("gpt2", random_weights=True)
    >>> ids = lm.encode(["Hello world"])
    >>> NextToken(lm.model)(lm.grid(ids)).shape        # N×V
    torch.Size([1, 512])
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import LogitShiftError

#: the name :func:`load_lm` builds on first use
TRAINED = "fortunes-gpt"
#: configs built with random weights by name
RANDOM = ("gpt2", "llama", "gpt2-small")
#: model types read from a folder (all take ``inputs_embeds`` and expose ``get_input_embeddings``)
FAMILIES = ("gpt2", "llama")
#: the quotations used for training (topic files of the corpus; the rest of the directory is left alone)
LM_TOPICS = ("computers", "science", "politics", "literature", "people", "wisdom", "work", "education", "law", "linux")


def _offline() -> None:
    """Nothing from the hub (``HF_HUB_OFFLINE``), no warnings or progress bars from ``transformers``."""
    from .text import _quiet

    _quiet()
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    transformers.logging.set_verbosity_error()


@dataclass
class LanguageModel:
    """A causal LM, its tokenizer (``None`` for random configs: ids are used as given) and where it came from."""

    model: nn.Module
    tokenizer: Any
    name: str
    folder: Path | None = None

    @property
    def vocab_size(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0])  # type: ignore[operator]

    def encode(self, texts: list[str]) -> torch.Tensor:
        """N×L token ids of ``texts`` (the same length each; random configs: bytes mod the vocabulary)."""
        if self.tokenizer is None:
            rows = [[b % self.vocab_size for b in t.encode()] for t in texts]
        else:
            rows = [self.tokenizer(t)["input_ids"] for t in texts]
        if len({len(r) for r in rows}) != 1:
            raise LogitShiftError(f"prompts: {[len(r) for r in rows]} tokens; expected the same number in every prompt of a batch")
        return torch.tensor(rows, dtype=torch.long)

    def decode(self, ids: torch.Tensor) -> list[str]:
        if self.tokenizer is None:
            return [" ".join(str(int(i)) for i in row) for row in ids]
        return [self.tokenizer.decode(row.tolist()) for row in ids]

    def grid(self, ids: torch.Tensor) -> torch.Tensor:
        """The token embeddings of ``ids`` (N×L) as the N×D×1×L input of :class:`NextToken`."""
        return token_grid(self.model, ids)


def token_grid(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """``E[ids]`` (N×L×D) laid out N×D×1×L."""
    emb = model.get_input_embeddings()(ids)  # type: ignore[operator]
    return emb.transpose(1, 2)[:, :, None, :]


class NextToken(nn.Module):
    """``forward(x) = lm(inputs_embeds = x[:, :, 0, :]ᵀ).logits[:, -1]``: next-token logits (N×V) from N×D×1×L embeddings."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[2] != 1:
            raise LogitShiftError(f"next-token input: expected N×D×1×L token embeddings, got {tuple(x.shape)}")
        out = self.lm(inputs_embeds=x[:, :, 0, :].transpose(1, 2))
        logits = out.logits if hasattr(out, "logits") else out
        return logits[:, -1, :]


def lm_config(family: str = "gpt2", vocab_size: int = 512, hidden: int = 64, layers: int = 2, heads: int = 2, positions: int = 128) -> Any:
    """A small HF config: GPT-2 (learned positions, LayerNorm, tied unembedding) or Llama (rotary, RMSNorm, untied)."""
    _offline()
    import transformers

    if family == "gpt2":
        return transformers.GPT2Config(
            vocab_size=vocab_size,
            n_embd=hidden,
            n_layer=layers,
            n_head=heads,
            n_positions=positions,
            bos_token_id=0,
            eos_token_id=0,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
        )
    if family == "llama":
        return transformers.LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            max_position_embeddings=positions,
            bos_token_id=0,
            eos_token_id=0,
            pad_token_id=0,
            tie_word_embeddings=False,
        )
    raise LogitShiftError(f"model family {family!r}: expected one of {', '.join(FAMILIES)}")


def random_lm(family: str = "gpt2", seed: int = 0, **sizes: int) -> LanguageModel:
    """A causal LM with random weights (random weights: every figure from it says so); ``gpt2-small``: 12×768, 50,257 tokens."""
    _offline()
    import transformers

    if family == "gpt2-small":
        config = transformers.GPT2Config(bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    else:
        config = lm_config(family, **sizes)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    return LanguageModel(model, None, f"{family} (random weights)")


def _load_folder(path: Path, random_weights: bool) -> LanguageModel:
    _offline()
    import transformers

    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise LogitShiftError(f"model {str(path)!r}: no config.json; expected a HuggingFace causal-LM folder")
    model_type = json.loads(cfg_file.read_text()).get("model_type")
    if model_type not in FAMILIES:
        raise LogitShiftError(f"model {str(path)!r}: model_type {model_type!r}; expected one of {', '.join(FAMILIES)}")
    kw = {"trust_remote_code": False, "local_files_only": True}
    if random_weights:
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.from_pretrained(path, **kw))
    else:
        model = transformers.AutoModelForCausalLM.from_pretrained(path, **kw)
    tok = transformers.AutoTokenizer.from_pretrained(path, **kw) if (path / "tokenizer.json").is_file() else None
    return LanguageModel(model.eval(), tok, path.name + (" (random weights)" if random_weights else ""), path)


def load_lm(name: str = TRAINED, random_weights: bool = False) -> LanguageModel:
    """:data:`TRAINED` (built on first use), a local HF folder, or a :data:`RANDOM` config (``random_weights=True``)."""
    if name == TRAINED:
        return _load_folder(trained_lm_folder(), random_weights)
    if Path(name).is_dir():
        return _load_folder(Path(name), random_weights)
    if name in RANDOM:
        if not random_weights:
            raise LogitShiftError(f"model {name!r}: a config, not weights; add --random-weights (nothing is downloaded)")
        return random_lm(name)
    raise LogitShiftError(
        f"model {name!r}: expected {TRAINED!r}, a local HuggingFace folder, or one of {', '.join(RANDOM)} with --random-weights"
    )


@dataclass
class LMTraining:
    """What :func:`train_lm` did: sizes, steps, seconds and the held-out perplexity."""

    vocab_size: int
    parameters: int
    train_tokens: int
    heldout_tokens: int
    steps: int
    seconds: float
    cpu_seconds: float
    threads: int
    train_loss: float
    heldout_loss: float
    heldout_perplexity: float
    seed: int


def _corpus(topics: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Training and held-out quotations (every 10th held out)."""
    from .text import FORTUNES_DIR, read_fortunes

    quotes: list[str] = []
    for topic in topics:
        path = FORTUNES_DIR / topic
        if not path.is_file():
            raise LogitShiftError(
                f"corpus {str(path)!r}: no such fortune file; expected Debian's fortunes packages (apt-get install fortunes fortunes-min)"
            )
        quotes += read_fortunes(path)
    return [q for i, q in enumerate(quotes) if i % 10], quotes[::10]


def _bpe(texts: list[str], vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>")


def _stream(tokenizer: Any, texts: list[str]) -> torch.Tensor:
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for t in texts:
        ids += tokenizer(t)["input_ids"] + [eos]
    return torch.tensor(ids, dtype=torch.long)


def _loss(model: nn.Module, stream: torch.Tensor, block: int, batch: int = 64) -> float:
    """Mean next-token cross-entropy over non-overlapping blocks of ``stream``."""
    n = (len(stream) - 1) // block
    total, count = 0.0, 0
    with torch.no_grad():
        for lo in range(0, n, batch):
            rows = torch.stack([stream[i * block : i * block + block + 1] for i in range(lo, min(n, lo + batch))])
            logits = model(rows[:, :-1]).logits
            total += float(nn.functional.cross_entropy(logits.flatten(0, 1), rows[:, 1:].flatten(), reduction="sum"))
            count += rows[:, 1:].numel()
    return total / max(count, 1)


def train_lm(
    folder: str | os.PathLike,
    topics: tuple[str, ...] = LM_TOPICS,
    vocab_size: int = 1024,
    hidden: int = 128,
    layers: int = 2,
    heads: int = 4,
    block: int = 64,
    batch: int = 32,
    steps: int = 800,
    lr: float = 3e-3,
    seed: int = 0,
) -> LMTraining:
    """Train the tokenizer and a tiny GPT-2 on the quotations of ``topics``; save the HF folder; return the record.

    AdamW, linear warm-up (5%) then cosine decay, random blocks of ``block + 1`` tokens drawn with a
    seeded generator; held-out perplexity ``exp(mean cross-entropy)`` on the held-out quotations.
    One thread (the same numbers on every machine; on a shared 2-core machine a second thread
    mostly waits: measured 0.18 s of CPU per step on one thread, 1.2 s on two).
    """
    _offline()
    start, cpu = time.perf_counter(), time.process_time()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_lm(Path(folder), topics, vocab_size, hidden, layers, heads, block, batch, steps, lr, seed, start, cpu)
    finally:
        torch.set_num_threads(threads)


def _train_lm(out, topics, vocab_size, hidden, layers, heads, block, batch, steps, lr, seed, start, cpu) -> LMTraining:
    """The body of :func:`train_lm` (one thread set)."""
    import transformers

    torch.manual_seed(seed)
    train_texts, held_texts = _corpus(topics)
    tokenizer = _bpe(train_texts, vocab_size)
    train, held = _stream(tokenizer, train_texts), _stream(tokenizer, held_texts)
    config = lm_config("gpt2", len(tokenizer), hidden, layers, heads, positions=256)
    config.bos_token_id = config.eos_token_id = tokenizer.eos_token_id
    model = transformers.GPT2LMHeadModel(config)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    gen = torch.Generator().manual_seed(seed)
    model.train()
    loss = torch.tensor(0.0)
    for _ in range(steps):
        at = torch.randint(0, len(train) - block - 1, (batch,), generator=gen)
        rows = torch.stack([train[i : i + block + 1] for i in at.tolist()])
        loss = model(rows, labels=rows).loss  # HF shifts the labels: each token predicted from its prefix
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    model.eval()
    held_loss = _loss(model, held, block)
    record = LMTraining(
        vocab_size=len(tokenizer),
        parameters=sum(p.numel() for p in model.parameters()),
        train_tokens=len(train),
        heldout_tokens=len(held),
        steps=steps,
        seconds=round(time.perf_counter() - start, 1),
        cpu_seconds=round(time.process_time() - cpu, 1),
        threads=1,
        train_loss=round(float(loss.detach()), 4),
        heldout_loss=round(held_loss, 4),
        heldout_perplexity=round(math.exp(held_loss), 2),
        seed=seed,
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "training.json").write_text(json.dumps({**asdict(record), "topics": list(topics)}, indent=1) + "\n")
    return record


def trained_lm_folder(folder: str | os.PathLike | None = None) -> Path:
    """The folder of :data:`TRAINED`, trained (about a minute or two on 2 cores) when it is not there yet."""
    from .text import cache_dir

    path = Path(folder) if folder is not None else cache_dir() / TRAINED
    if not (path / "training.json").is_file():
        train_lm(path)
    return path


def held_out_prompts(lm: LanguageModel, n: int, length: int) -> torch.Tensor:
    """N×L ids: the first ``length`` tokens of the first ``n`` held-out quotations that have that many (random
    ids, seeded, for a model without a tokenizer)."""
    if lm.tokenizer is None:
        return torch.randint(1, lm.vocab_size, (n, length), generator=torch.Generator().manual_seed(0))
    _, held = _corpus(LM_TOPICS)
    rows = [ids[:length] for ids in (lm.tokenizer(t)["input_ids"] for t in held) if len(ids) >= length]
    return torch.tensor(rows[:n], dtype=torch.long)


def greedy(model: nn.Module, ids: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` greedy next tokens after ``ids`` (N×L), one full forward per token (no cache: a wrapper's forward is what runs)."""
    out = ids
    with torch.no_grad():
        for _ in range(n):
            logits = model(out)
            logits = logits.logits if hasattr(logits, "logits") else logits
            out = torch.cat([out, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return out[:, ids.shape[1] :]


__all__ = [
    "FAMILIES",
    "RANDOM",
    "TRAINED",
    "LMTraining",
    "LanguageModel",
    "NextToken",
    "greedy",
    "held_out_prompts",
    "lm_config",
    "load_lm",
    "random_lm",
    "token_grid",
    "train_lm",
    "trained_lm_folder",
]
