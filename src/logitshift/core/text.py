"""Text classifiers: a real offline corpus, a tokenizer and a small BERT trained here, HF folders, random configs.

* **Corpus**: Debian's ``fortunes`` packages (``apt-get install fortunes fortunes-min``) put
  ~16k quotations in topic files under ``/usr/share/games/fortunes``; :func:`load_corpus` reads
  the topics :data:`TOPICS` as classes (one quotation = one text, ``%`` lines separate them) and
  :func:`split` holds out a deterministic, stratified share of each class.
* **Tokenizer**: WordPiece trained here on the training texts (the ``tokenizers`` library), saved
  with the model as ``tokenizer.json`` so plain ``transformers`` loads it.
* **Model**: :func:`train_classifier` trains a tiny ``BertForSequenceClassification`` (seeded,
  deterministic on CPU) and saves a HuggingFace folder (``config.json``, ``model.safetensors``,
  tokenizer files, ``training.json`` with the held-out accuracy). :func:`load_text_model` gives
  ``"fortunes-bert"`` (built on first use in :func:`cache_dir`), any local HF folder (never
  ``trust_remote_code``, nothing downloaded) or a random-weight ``bert`` / ``distilbert`` config.
* **Explaining tokens**: :class:`EmbeddingsClassifier` is the model seen from its word
  embeddings, laid out as an N×D×1×L "image" (D channels, a 1×L grid of token positions), so
  the input methods, the engine, the shift terms and the stress set of the image code run on
  tokens unchanged: the channel reduction of a map is the reduction over the embedding
  dimensions, and a map is N×1×L — one value per token.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import LogitShiftError

FORTUNES_DIR = Path("/usr/share/games/fortunes")
#: the topic files used as classes (each holds 580–1050 quotations)
TOPICS = ("computers", "politics", "science", "songs-poems", "men-women")
#: the name :func:`load_text_model` builds on first use
TRAINED = "fortunes-bert"
#: model families read from a folder or built from a config (all take ``inputs_embeds``)
FAMILIES = ("bert", "distilbert", "roberta")
SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


@dataclass
class Corpus:
    """Texts with one class index each, and the class names."""

    texts: list[str]
    labels: list[int]
    classes: tuple[str, ...]

    def subset(self, idx: Sequence[int]) -> Corpus:
        return Corpus([self.texts[i] for i in idx], [self.labels[i] for i in idx], self.classes)


def read_fortunes(path: str | os.PathLike) -> list[str]:
    """The quotations of one fortune file: blocks separated by ``%`` lines, overstrike (``c\\b``) removed,
    whitespace collapsed, empty blocks dropped."""
    raw = Path(path).read_bytes().decode("utf-8", errors="replace")
    raw = re.sub(r".\x08", "", raw)
    return [t for t in (" ".join(block.split()) for block in re.split(r"^%\s*$", raw, flags=re.M)) if t]


def load_corpus(topics: Sequence[str] = TOPICS, root: str | os.PathLike = FORTUNES_DIR, per_class: int | None = None) -> Corpus:
    """The quotations of each topic file under ``root``, topic = class (``per_class``: the first n of each)."""
    root = Path(root)
    texts: list[str] = []
    labels: list[int] = []
    for c, topic in enumerate(topics):
        path = root / topic
        if not path.is_file():
            raise LogitShiftError(
                f"corpus {str(path)!r}: no such fortune file; expected Debian's fortunes packages (apt-get install fortunes fortunes-min)"
            )
        quotes = read_fortunes(path)[:per_class]
        texts += quotes
        labels += [c] * len(quotes)
    return Corpus(texts, labels, tuple(topics))


def split(corpus: Corpus, held_out: float = 0.2, seed: int = 0) -> tuple[Corpus, Corpus]:
    """A deterministic stratified split: ``held_out`` of each class (a seeded permutation) for testing."""
    if not 0 < held_out < 1:
        raise LogitShiftError(f"held_out {held_out!r}: expected a share between 0 and 1")
    rng = np.random.default_rng(seed)
    labels = np.asarray(corpus.labels)
    train: list[int] = []
    test: list[int] = []
    for c in range(len(corpus.classes)):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = max(1, int(round(held_out * len(idx))))
        test += idx[:k].tolist()
        train += idx[k:].tolist()
    return corpus.subset(sorted(train)), corpus.subset(sorted(test))


def train_tokenizer(texts: Sequence[str], vocab_size: int = 3000, max_length: int = 64) -> Any:
    """A lowercasing WordPiece tokenizer trained on ``texts``, as a ``transformers`` fast tokenizer
    (adds ``[CLS] … [SEP]``, truncates to ``max_length``)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(
        list(texts), trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL), show_progress=False)
    )
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    from tokenizers import decoders

    tok.decoder = decoders.WordPiece()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]"
    )
    fast.model_max_length = max_length
    return fast


@dataclass
class Training:
    """What :func:`train_classifier` measured."""

    train_size: int
    test_size: int
    train_accuracy: float
    test_accuracy: float
    epochs: int
    seconds: float  # wall clock
    classes: tuple[str, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)
    cpu_seconds: float = 0.0  # CPU time of the training process (one thread): what a loaded machine does not inflate

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


def _batches(tokenizer: Any, corpus: Corpus, batch: int, order: np.ndarray) -> list[tuple[dict[str, torch.Tensor], torch.Tensor]]:
    out = []
    for lo in range(0, len(order), batch):
        idx = order[lo : lo + batch]
        enc = tokenizer([corpus.texts[i] for i in idx], padding=True, truncation=True, return_tensors="pt")
        out.append(({k: enc[k] for k in ("input_ids", "attention_mask")}, torch.tensor([corpus.labels[i] for i in idx])))
    return out


@torch.no_grad()
def accuracy(model: nn.Module, tokenizer: Any, corpus: Corpus, batch: int = 128) -> float:
    """Share of ``corpus`` whose top-1 class is its label."""
    model.eval()
    right = 0
    for inputs, y in _batches(tokenizer, corpus, batch, np.arange(len(corpus.texts))):
        right += int((model(**inputs).logits.argmax(1) == y).sum())
    return right / max(1, len(corpus.texts))


def bert_config(
    vocab_size: int, classes: Sequence[str], family: str = "bert", hidden: int = 64, layers: int = 2, heads: int = 2, max_length: int = 64
):
    """A ``transformers`` config of ``family`` (bert / distilbert / roberta) for sequence classification."""
    from transformers import BertConfig, DistilBertConfig, RobertaConfig

    labels: dict[str, Any] = {"id2label": dict(enumerate(classes)), "label2id": {c: i for i, c in enumerate(classes)}}
    if family == "distilbert":
        return DistilBertConfig(
            vocab_size=vocab_size,
            dim=hidden,
            n_layers=layers,
            n_heads=heads,
            hidden_dim=4 * hidden,
            max_position_embeddings=max_length,
            pad_token_id=0,
            **labels,
        )
    if family in ("bert", "roberta"):
        cls = BertConfig if family == "bert" else RobertaConfig
        return cls(
            vocab_size=vocab_size,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=4 * hidden,
            max_position_embeddings=max_length + (2 if family == "roberta" else 0),
            pad_token_id=0 if family == "bert" else 1,
            **labels,
        )
    raise LogitShiftError(f"family {family!r}: unknown; expected one of {', '.join(FAMILIES)}")


def train_classifier(
    folder: str | os.PathLike,
    topics: Sequence[str] = TOPICS,
    root: str | os.PathLike = FORTUNES_DIR,
    *,
    per_class: int | None = None,
    epochs: int = 12,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 2,
    vocab_size: int = 3000,
    max_length: int = 64,
    batch: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
) -> Training:
    """Train a small BERT classifier on the fortune topics and save it as a HuggingFace folder.

    Seeded (``seed``) and deterministic on CPU: AdamW (``lr``, linear decay), ``epochs`` passes in a
    seeded order, dropout 0.1. The held-out accuracy (20 % of each class, :func:`split`) is in
    ``training.json`` beside the weights.
    """
    import time

    start = (time.perf_counter(), time.process_time())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same sums in the same order every run, and no spinning on a shared machine
    try:
        return _train(folder, topics, root, per_class, epochs, hidden, layers, heads, vocab_size, max_length, batch, lr, seed, start)
    finally:
        torch.set_num_threads(threads)


def _train(folder, topics, root, per_class, epochs, hidden, layers, heads, vocab_size, max_length, batch, lr, seed, start) -> Training:
    import time

    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    corpus = load_corpus(topics, root, per_class)
    train, test = split(corpus, seed=seed)
    tokenizer = train_tokenizer(train.texts, vocab_size, max_length)
    model = BertForSequenceClassification(bert_config(len(tokenizer), topics, "bert", hidden, layers, heads, max_length))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    rng = np.random.default_rng(seed)
    steps = epochs * -(-len(train.texts) // batch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / steps))
    for _ in range(epochs):
        model.train()
        for inputs, y in _batches(tokenizer, train, batch, rng.permutation(len(train.texts))):
            loss = nn.functional.cross_entropy(model(**inputs).logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    result = Training(
        len(train.texts),
        len(test.texts),
        accuracy(model, tokenizer, train),
        accuracy(model, tokenizer, test),
        epochs,
        time.perf_counter() - start[0],
        tuple(topics),
        {
            "hidden": hidden,
            "layers": layers,
            "heads": heads,
            "vocab_size": len(tokenizer),
            "max_length": max_length,
            "seed": seed,
            "lr": lr,
        },
        time.process_time() - start[1],
    )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _quiet()
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    (folder / "training.json").write_text(json.dumps(result.to_json(), indent=1))
    return result


def cache_dir() -> Path:
    """Where built models live: ``$LOGITSHIFT_CACHE`` or ``~/.cache/logitshift``."""
    return Path(os.environ.get("LOGITSHIFT_CACHE") or Path.home() / ".cache" / "logitshift")


class EmbeddingsClassifier(nn.Module):
    """A HuggingFace sequence classifier seen from its word embeddings: input N×D×1×L, output N×C logits.

    ``forward(x) = hf(inputs_embeds = x[:, :, 0, :]ᵀ).logits``: position and token-type embeddings,
    layer norm and the rest of the model run as usual (no padding: every row has L tokens, the
    attention mask is all ones). The layout puts the D embedding dimensions where an image has
    channels, so a method's channel reduction is the reduction over D and its map is one value per token.
    """

    def __init__(self, hf: nn.Module) -> None:
        super().__init__()
        self.hf = hf

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[2] != 1:
            raise LogitShiftError(f"embeddings: expected N×D×1×L, got {tuple(x.shape)}")
        return self.hf(inputs_embeds=x[:, :, 0, :].transpose(1, 2)).logits


@dataclass
class TextModel:
    """A text classifier ready to explain: the HF model, its tokenizer, its classes, its embeddings view."""

    hf: nn.Module
    tokenizer: Any
    name: str
    classes: tuple[str, ...]
    module: EmbeddingsClassifier = field(init=False)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.hf.eval()
        self.module = EmbeddingsClassifier(self.hf).eval()

    @property
    def embeddings(self) -> nn.Embedding:
        return self.hf.get_input_embeddings()  # type: ignore[operator]

    def encode(self, texts: Sequence[str]) -> list[torch.Tensor]:
        """Each text's token ids (with ``[CLS]``/``[SEP]``, truncated to the tokenizer's maximum)."""
        out = []
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise LogitShiftError(f"text {i + 1}: empty; expected some words")
            out.append(torch.tensor(self.tokenizer(t, truncation=True)["input_ids"]))
        return out

    def tokens(self, ids: torch.Tensor) -> list[str]:
        return list(self.tokenizer.convert_ids_to_tokens(ids.tolist()))

    @torch.no_grad()
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (N×L or L) → the model's input x, N×D×1×L."""
        ids = ids.view(1, -1) if ids.dim() == 1 else ids
        return self.embeddings(ids.to(self.embeddings.weight.device)).transpose(1, 2)[:, :, None, :].detach().clone()


def groups(ids: Sequence[torch.Tensor]) -> list[list[int]]:
    """Indices of the texts grouped by token count (each group is one batch with no padding), in first-seen order."""
    by_len: dict[int, list[int]] = {}
    for i, t in enumerate(ids):
        by_len.setdefault(int(t.numel()), []).append(i)
    return list(by_len.values())


def read_texts(items: Sequence[str]) -> list[str]:
    """``--texts``: each item a text, or a file (``.txt``) holding one text a line (blank lines skipped)."""
    out: list[str] = []
    for item in items:
        if os.path.isfile(item):
            lines = [ln.strip() for ln in Path(item).read_text(encoding="utf-8", errors="replace").splitlines()]
            got = [ln for ln in lines if ln]
            if not got:
                raise LogitShiftError(f"--texts {item!r}: the file holds no text; expected one text a line")
            out += got
        elif item.lower().endswith(".txt"):
            raise LogitShiftError(f"--texts {item!r}: no such file; expected a text or a file with one text a line")
        elif item.strip():
            out.append(item.strip())
    if not out:
        raise LogitShiftError("--texts: no text given; expected strings or files with one text a line")
    return out


def _quiet() -> None:
    """No progress bars from ``transformers`` (its loading and saving bars would interleave with ours on stderr)."""
    from transformers.utils import logging

    logging.disable_progress_bar()


def _load_folder(path: Path, name: str) -> TextModel:
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    _quiet()

    if not (path / "config.json").is_file():
        raise LogitShiftError(f"model {name!r}: {str(path)!r} has no config.json; expected a HuggingFace model folder")
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    except Exception as exc:
        raise LogitShiftError(f"model {name!r}: config.json not readable ({type(exc).__name__}: {str(exc)[:120]})") from None
    if config.model_type not in FAMILIES:
        raise LogitShiftError(f"model {name!r}: model_type {config.model_type!r}; expected one of {', '.join(FAMILIES)}")
    try:
        hf = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True, trust_remote_code=False, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    except Exception as exc:
        raise LogitShiftError(f"model {name!r}: not loadable from {str(path)!r} ({type(exc).__name__}: {str(exc)[:160]})") from None
    classes = tuple(str(config.id2label[i]) for i in range(config.num_labels))
    info: dict[str, Any] = {"folder": str(path), "family": config.model_type}
    if (path / "training.json").is_file():
        info["training"] = json.loads((path / "training.json").read_text())
    return TextModel(hf, tokenizer, name, classes, info)


def trained_folder(folder: str | os.PathLike | None = None) -> Path:
    """The folder of :data:`TRAINED`, trained (≈ a minute on 2 cores) and saved there on first use."""
    path = Path(folder) if folder is not None else cache_dir() / TRAINED
    if not (path / "model.safetensors").is_file():
        import shutil

        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        train_classifier(tmp)
        if path.exists() and not (path / "model.safetensors").is_file():
            shutil.rmtree(path)  # an incomplete folder from an interrupted build
        try:
            os.replace(tmp, path)
        except OSError:  # another process built it meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def random_model(
    family: str = "bert", hidden: int = 64, layers: int = 2, heads: int = 2, seed: int = 0, tokenizer: Any = None
) -> TextModel:
    """A random-weight ``family`` classifier (seeded), with the fortunes tokenizer (trained here) unless one is given."""
    from transformers import AutoModelForSequenceClassification

    if family not in FAMILIES:
        raise LogitShiftError(f"--random-weights {family!r}: unknown family; expected one of {', '.join(FAMILIES)}")
    if tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(trained_folder(), local_files_only=True)
    torch.manual_seed(seed)
    config = bert_config(len(tokenizer), TOPICS, family, hidden, layers, heads, int(tokenizer.model_max_length))
    hf = AutoModelForSequenceClassification.from_config(config)
    return TextModel(hf, tokenizer, f"random {family} (hidden {hidden}, {layers} layers)", TOPICS, {"family": family, "random": True})


def load_text_model(name: str = TRAINED, random_weights: bool = False) -> TextModel:
    """``"fortunes-bert"`` (trained here on first use), a local HF folder, or with ``random_weights`` a family
    name (``bert``, ``distilbert``, ``roberta``) or a folder whose config is used with random weights."""
    if random_weights:
        if name in FAMILIES:
            return random_model(name)
        path = Path(name)
        if not (path / "config.json").is_file():
            raise LogitShiftError(f"--random-weights {name!r}: expected a family ({', '.join(FAMILIES)}) or a folder with config.json")
        loaded = _load_folder(path, name)
        torch.manual_seed(0)
        loaded.hf.init_weights()  # type: ignore[operator]
        loaded.info["random"] = True
        return TextModel(loaded.hf, loaded.tokenizer, f"{name} (random weights)", loaded.classes, loaded.info)
    if name == TRAINED:
        return _load_folder(trained_folder(), TRAINED)
    path = Path(name)
    if path.is_dir():
        return _load_folder(path, name)
    raise LogitShiftError(
        f"model {name!r}: not a text model; expected {TRAINED!r} or a HuggingFace folder (config.json + model.safetensors)"
    )
