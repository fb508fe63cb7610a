"""What :func:`logitshift.shift.steer.steer` built and measured: :class:`Steering`, ``shifted.steering``.

It is saved beside a shifted model (``load_shifted`` reads it back), written into every command's
record (``"steering"``) and read by the report; its JSON keys are those of the dict it replaces, so
files written before it still read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..core.parts import Part, omit


@dataclass(kw_only=True)
class Head(Part):
    """The dtype the shift is added in, and (``auto``) the float32 figures that chose it."""

    dtype: str = "float32"  # float32 | float64
    auto: bool = False  # chosen by head_dtype="auto"
    float32_max_abs_prob_diff: float | None = omit()  # auto: the float32 head's max |Δprob| on the check images
    float32_stress_max_abs_prob_diff: float | None = omit()  # auto: … on the stress inputs, when the check images passed

    def __getitem__(self, key: str) -> Any:
        """Dict-style reading (the JSON view), kept for one release for code that read the old dict."""
        return self.to_json()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.to_json()


@dataclass(kw_only=True)
class Steering(Part):
    """The methods, construction, layers, target and strengths of a shifted model, and the effect measured.

    ``strength``: per family (``cam``, ``input``); ``effect``: the mean target mass of each method's logit map
    on the ``check_images`` (empty when not measured); ``reached``: every ``steered`` method met ``goal``
    (None when not measured); ``stress``: the equivalence beyond the check images
    (:meth:`logitshift.shift.model.Stress.to_json`), None when not checked.
    """

    methods: list[str] = field(default_factory=list)
    construction: str = "gate"
    families: list[str] = field(default_factory=list)
    layer: str | None = None  # the explanation (CAM) layer
    shift_layer: str | None = None  # the layer the CAM term reads
    cam_term: str | None = None  # gate | fit (signed map) | region | paper; None without a CAM term
    target: str = ""
    strength: dict[str, float] = field(default_factory=dict)
    auto: bool = False
    goal: float = 0.5
    plateau: float | None = None
    effect: dict[str, float] = field(default_factory=dict)
    steered: list[str] = field(default_factory=list)  # the methods the construction aims at
    reached: bool | None = None
    head: Head = field(default_factory=Head)
    check_images: int = 0
    stress: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys a newer version wrote

    def __getitem__(self, key: str) -> Any:
        """Dict-style reading (the JSON view), kept for one release for code that read the old dict."""
        return self.to_json()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.to_json()


__all__ = ["Head", "Steering"]
