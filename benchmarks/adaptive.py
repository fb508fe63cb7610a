"""Attacks built by someone who has read the audit (issue 13), and the maps they fool.

Each attack switches off one of the statistics the audit had before its effect
statistic, the way its weakness allows, written on plain modules and hooks (no
logitshift class). The fake cut (an ``nn.Identity`` leaf on the logits, which
the old audit took as the classifier's input so that bypass and head read 0)
costs the attacker nothing, so every attack below carries it, except
``extra-feature``, which is its own cut.

* ``act-weighted``: a feature channel with a very large activation ``B`` and a
  tiny input gradient (a conv channel with bias ``B`` and weights ``1e-3``,
  read by nothing honest); the shift ``t = K·Σ_{top-left} A_k`` reads it.
  CAMs that weight gradients by activations (HiResCAM, LayerCAM, Grad-CAM++)
  move to the top-left; the gradient κ stays at the honest model's value.
* ``dilute``: one extra output that is never predicted (logit −1000) but has a
  large input-dependent gradient (``D·Σ A`` at a layer), which inflates the
  class spread every ratio is taken against, plus a region shift.
* ``fake-cut``: a region shift of a layer, with nothing else.
* ``extra-feature``: the shift appended to the classifier's input as one more
  feature ``f = Σ_{top-left} A``, whose weight is ``K`` for every class: the
  classifier's input is a cut, the classifier is linear, so only κ could see it.
* ``few-class``: region and ``tanh-norm`` shifts on trained 2- and 10-class
  CNNs, where κ has no margin.

Round 2 (issue 25), one attack per place the audit did not look, each
fooling a map a user explains: ``logit-norm`` (a soft maximum of the logits
added to every logit, in a module that looks like a normalisation: top-1 maps
kept, the other classes' steered to the top-1's), ``max-one-class`` (``K·max z``
on images that share one class: a linear ``W + 1uᵀ`` shift there, which only
the second class's maps show), ``path-gated`` (a region shift switched on only
off the data, along Integrated Gradients' path), ``two-heads`` (two softmax
groups carrying ``+t`` and ``−t``).

And one attack on the audit as it now is (reported as a limit, beside
``linear-head``): ``extra-feature-mixed`` is ``extra-feature`` behind a random
rotation of the classifier's input (``h' = Q·[h, f]``, the classifier
``W' = [W, K·1]·Qᵀ``): no feature of ``h'`` is read by the common mode alone,
so the audit's feature test cannot fire, and the model is the ``W + 1uᵀ``
classifier of the ``linear-head`` limit.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn


class Tail(nn.Module):
    """``base(x) + t(A, x, z)·1`` through an ``nn.Identity`` leaf (the fake cut), ``A`` hooked at ``layer``.

    ``extra``: an optional function giving one more output column (never predicted)."""

    def __init__(self, base: nn.Module, layer: str, fn: Callable | None, extra: Callable | None = None) -> None:
        super().__init__()
        self.base, self.layer, self.fn, self.extra = base, layer, fn, extra
        self.tail = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        store: dict[str, torch.Tensor] = {}
        handle = self.base.get_submodule(self.layer).register_forward_hook(lambda _m, _i, out: store.__setitem__("a", out))
        try:
            z = self.base(x).double()
        finally:
            handle.remove()
        a = store["a"].double()
        if self.fn is not None:
            z = z + self.fn(a, x.double(), z)[:, None]
        if self.extra is not None:
            z = torch.cat([z, self.extra(a, x.double(), z)[:, None]], dim=1)
        return self.tail(z)


def region_sum(a: torch.Tensor, channels: slice | int = slice(None)) -> torch.Tensor:
    """``Σ`` of the top-left quarter of ``a`` (over the chosen channels)."""
    h, w = a.shape[-2:]
    part = a[:, channels, : max(1, h // 2), : max(1, w // 2)]
    return part.flatten(1).sum(dim=1)


def region(k: float) -> Callable:
    """As the project's region shift, written again: ``K·HW/2·(‖A_R‖² − ‖A_N‖²)``, R the top-left quarter, N the rest."""

    def fn(a, x, z):
        h, w = a.shape[-2:]
        inside = torch.zeros(h, w, dtype=a.dtype)
        inside[: max(1, h // 2), : max(1, w // 2)] = 1
        sq = a.pow(2).sum(dim=1)
        return k * h * w / 2 * ((sq * inside).flatten(1).sum(dim=1) - (sq * (1 - inside)).flatten(1).sum(dim=1))

    return fn


def tanh_norm(k: float) -> Callable:
    return lambda a, x, z: k * torch.tanh(a.mean(dim=(1, 2, 3))) * a.flatten(1).norm(dim=1)


def with_big_channel(base: nn.Module, big: float = 1e3, seed: int = 0) -> nn.Module:
    """A copy of a ``features``-Sequential CNN (conv, ReLU, conv, ReLU) with one more channel after the first conv:
    bias ``big``, input weights ``1e-3`` (so a very large activation with a tiny input gradient), read by nothing
    honest (the second conv's weights from it are 0). Same logits, same probabilities."""
    model = copy.deepcopy(base)
    conv0, conv2 = model.features[0], model.features[2]
    g = torch.Generator().manual_seed(seed)
    new0 = nn.Conv2d(conv0.in_channels, conv0.out_channels + 1, conv0.kernel_size, conv0.stride, conv0.padding)
    new2 = nn.Conv2d(conv2.in_channels + 1, conv2.out_channels, conv2.kernel_size, conv2.stride, conv2.padding)
    with torch.no_grad():
        new0.weight[:-1] = conv0.weight
        new0.bias[:-1] = conv0.bias
        new0.weight[-1] = 1e-3 * torch.randn(new0.weight[-1].shape, generator=g)
        new0.bias[-1] = big
        new2.weight.zero_()
        new2.weight[:, :-1] = conv2.weight
        new2.bias.copy_(conv2.bias)
    model.features[0], model.features[2] = new0, new2
    return model.eval()


def attacks(base: nn.Module, layer: str, quick: bool) -> list[tuple[str, float, Callable[[], nn.Module]]]:
    """(family, strength, builder) for the adaptive attacks on a ``features``-Sequential CNN; ``layer``: where the shift reads."""
    strengths = (1e-3, 1e-1) if quick else (1e-4, 1e-3, 1e-2, 1e-1)
    out: list[tuple[str, float, Callable[[], nn.Module]]] = []
    for k in strengths:
        # the big channel is the last channel of features.1 (the first ReLU)
        out.append(("act-weighted", k, lambda k=k: Tail(with_big_channel(base), "features.1", lambda a, x, z, k=k: k * region_sum(a, -1))))
        out.append(("dilute", k, lambda k=k: Tail(base, layer, region(k), extra=dilution(base, layer))))
        out.append(("fake-cut", k, lambda k=k: Tail(base, layer, region(k))))
        out.append(("extra-feature", k, lambda k=k: ExtraFeature(base, layer, k)))
        out.append(("extra-feature-mixed", k, lambda k=k: ExtraFeature(base, layer, k, mixed=True)))
    return out


def dilution(base: nn.Module, layer: str, size: float = 1e3) -> Callable:
    """An output that is never predicted (logit about −10⁶) with a gradient ``size`` at every entry of ``layer``
    (random signs), far larger than any class's."""
    sign: dict[str, torch.Tensor] = {}

    def fn(a, x, z):
        if "r" not in sign or sign["r"].shape != a.shape[1:]:
            g = torch.Generator().manual_seed(7)
            sign["r"] = torch.randint(0, 2, a.shape[1:], generator=g).double() * 2 - 1
        return -1e6 + size * (a * sign["r"]).flatten(1).sum(dim=1)

    return fn


def few_class(base: nn.Module, layer: str, quick: bool) -> list[tuple[str, float, Callable[[], nn.Module]]]:
    strengths = (1e-3, 1e-1) if quick else (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    out: list[tuple[str, float, Callable[[], nn.Module]]] = []
    for k in strengths:
        out.append(("few-class", k, lambda k=k: Tail(base, layer, region(k))))
        out.append(("few-class", k, lambda k=k: Tail(base, layer, tanh_norm(k))))
    return out


class ExtraFeature(nn.Module):
    """The classifier reads ``[h, f]`` with ``f = Σ_{top-left} A`` at ``layer`` and weight ``K`` for every class.

    ``z = W h + b + K·f·1``: the classifier's input is a cut of the graph and the
    classifier is linear, so bypass and head read 0 by construction.
    ``mixed``: a random rotation ``Q`` (an ``nn.Linear`` without bias) is put
    before the classifier, whose weights become ``[W, K·1]·Qᵀ`` (same logits)."""

    def __init__(self, base: nn.Module, layer: str, k: float, mixed: bool = False, seed: int = 0) -> None:
        super().__init__()
        self.base, self.layer = base, layer
        fc = base.fc
        width = fc.in_features + 1
        weight = torch.cat([fc.weight.detach().double(), torch.full((fc.out_features, 1), k, dtype=torch.float64)], dim=1)
        self.mix: nn.Module = nn.Identity()
        if mixed:
            q, _ = torch.linalg.qr(torch.randn(width, width, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
            self.mix = nn.Linear(width, width, bias=False).double()
            with torch.no_grad():
                self.mix.weight.copy_(q)
            weight = weight @ q.T
        self.classifier = nn.Linear(width, fc.out_features).double()
        with torch.no_grad():
            self.classifier.weight.copy_(weight)
            self.classifier.bias.copy_(fc.bias.double())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        store: dict[str, torch.Tensor] = {}
        handle = self.base.get_submodule(self.layer).register_forward_hook(lambda _m, _i, out: store.__setitem__("a", out))
        try:
            h = torch.flatten(self.base.pool(self.base.features(x)), 1)
        finally:
            handle.remove()
        f = region_sum(store["a"].double())
        return self.classifier(self.mix(torch.cat([h.double(), f[:, None]], dim=1)))


# ----------------------------------------------------------------------------- round 2 (issue 25)


class LogitNorm(nn.Module):
    """Looks like a normalisation of the logits; adds ``K·logsumexp(βz)/β`` to every logit (a smooth function of
    them, a soft maximum): with ``q = softmax(βz)`` the top-1 gradient becomes ``g_1 + K·Σ q_j g_j ≈ (1 + K)·g_1``
    (same maps), every other class's ``g_j + K·g_1`` (steered to the top-1's)."""

    def __init__(self, k: float, beta: float = 10.0) -> None:
        super().__init__()
        self.k, self.beta = k, beta

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z + self.k * torch.logsumexp(self.beta * z, dim=1, keepdim=True) / self.beta


class Wrapped(nn.Module):
    def __init__(self, base: nn.Module, tail: nn.Module) -> None:
        super().__init__()
        self.base, self.norm = base, tail

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.base(x))


class MaxShift(nn.Module):
    """``t = K·max_j z_j``: on images that share their top class, ``K·z_c``, a linear function of ``h``."""

    def __init__(self, k: float) -> None:
        super().__init__()
        self.k = k

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z + self.k * z.max(dim=1, keepdim=True).values


class PathGated(nn.Module):
    """A region shift at ``features`` switched on only off the data: ``gate = relu(1 − mean|x| / m)²`` with ``m``
    below every digit's ``mean|x|``, so it is 0 on every real image and on along Integrated Gradients' path from
    the black (0) baseline, where ``mean|αx| = α·mean|x|``."""

    def __init__(self, base: nn.Module, k: float, m: float) -> None:
        super().__init__()
        self.base, self.k, self.m = base, k, m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        store = {}
        handle = self.base.features.register_forward_hook(lambda _m, _i, out: store.__setitem__("a", out))
        try:
            z = self.base(x)
        finally:
            handle.remove()
        a = store["a"]
        gate = torch.relu(1 - x.abs().flatten(1).mean(dim=1) / self.m).pow(2)
        t = self.k * gate * a[:, :, :2, :2].flatten(1).sum(dim=1)
        return z + t[:, None]


class TwoHeads(nn.Module):
    """Two softmax groups on one trunk: ``(z₁ + t, z₂ − t)``. Their sum carries no common mode, so an audit of the
    outputs taken together (or of the first alone, as ``as_logits`` reads a tuple) sees nothing of ``t`` in the sum."""

    def __init__(self, base: nn.Module, k: float, dict_output: bool = False) -> None:
        super().__init__()
        self.base, self.k, self.dict_output = base, k, dict_output
        self.aux = nn.Linear(base.fc.in_features, 5)
        torch.nn.init.normal_(self.aux.weight, std=0.5, generator=torch.Generator().manual_seed(0))

    def forward(self, x: torch.Tensor):
        a = self.base.features(x)
        h = torch.flatten(self.base.pool(a), 1)
        t = self.k * a[:, :, :2, :2].flatten(1).sum(dim=1, keepdim=True)
        z1, z2 = self.base.fc(h) + t, self.aux(h) - t
        return {"logits": z1, "aux": z2} if self.dict_output else (z1, z2)
