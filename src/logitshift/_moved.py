"""Old import paths, for one release (deprecated): ``logitshift.capture`` → ``logitshift.core.capture`` …

Issue 26 moved every module into a wing. An import of an old path still works and warns
once with the new one; this file goes in the next release. New code imports the new paths.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

MOVED = {
    **{
        f"logitshift.{m}": f"logitshift.core.{m}"
        for m in (
            "errors",
            "capture",
            "scores",
            "targets",
            "metrics",
            "models",
            "images",
            "classes",
            "labels",
            "device",
            "files",
        )
    },
    "logitshift.display": "logitshift.view.display",
    "logitshift.figures": "logitshift.view.figures",
    "logitshift.export": "logitshift.shift.save",
    "logitshift.engine": "logitshift.attribution.engine",
    "logitshift.steer": "logitshift.shift.steer",
    "logitshift.conformance.constructions": "logitshift.shift.twins",
    "logitshift.effect": "logitshift.audit.effect",
    "logitshift.safeload": "logitshift.audit.safeload",
    "logitshift.sandbox": "logitshift.audit.sandbox",
    "logitshift.conformance.check": "logitshift.conformance.cells",
    **{f"logitshift.{m}": f"logitshift.runs.{m}" for m in ("check", "demo", "matrix", "evaluate", "records", "store")},
}


class _Alias(importlib.abc.Loader):
    def __init__(self, new: str) -> None:
        self.new = new

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(f"{spec.name} moved to {self.new}; the old path goes in the next release", DeprecationWarning, stacklevel=3)
        return importlib.import_module(self.new)

    def exec_module(self, module: ModuleType) -> None:
        """The module is the new one, already executed."""


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path=None, target=None) -> importlib.machinery.ModuleSpec | None:
        new = MOVED.get(fullname)
        return importlib.machinery.ModuleSpec(fullname, _Alias(new)) if new else None


def install() -> None:
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())
