"""Load a ``torch.export`` program (``.pt2``) from someone you do not trust.

``torch.export.load`` alone is not safe on a hostile file (its own docstring
says so). Measured with torch 2.14, it runs code chosen by the file's author
through: the ``sample_inputs`` member (``torch.load`` retried with
``weights_only=False``), weight or constant entries flagged ``use_pickle``,
``opaque_obj_``/``custom_obj_`` constants and the legacy
``data/weights/<model>.pt`` member (pickles); ``guards_code`` (Python source
passed to ``exec`` when the module is built); symbolic-size expressions
(``sympy.sympify``, which evaluates Python); node targets resolved as dotted
paths under ``torch``/``math``/``operator`` (``torch.save`` is one); and aten
operators with side effects (``aten::from_file(shared=True)`` maps a file
that a later in-place ``fill_`` writes).

:func:`check_pt2` therefore reads the archive itself, before any deserializer
touches it, and refuses anything outside what a plain export of an image
classifier needs:

* the zip: at most :data:`MAX_MEMBERS` members, no duplicate names, every
  member stored (never deflated, so no member inflates beyond the file's own
  size), member sizes summing to no more than the file, only the members a
  plain export writes (:func:`_member_kind`);
* no pickle is ever read: ``use_pickle`` entries, ``opaque_obj_`` /
  ``custom_obj_`` constants, legacy ``.pt`` members and compiled
  (``aotinductor``) payloads are refused; ``sample_inputs`` is skipped unread
  (after a scan of its pickle opcodes that runs nothing, :func:`scan_sample_inputs`,
  so that a payload hidden there is reported rather than ignored);
* the graph JSON (at most :data:`MAX_JSON_BYTES`, parsed here): every node's
  target in :data:`ALLOWED_OPS` (pure aten tensor operators: no file,
  memory-mapping, random, print or side-effecting operator, nothing resolved
  by a dotted Python path), argument kinds in :data:`ALLOWED_ARGS` (no
  sub-graphs, custom objects or operator arguments), ``guards_code`` and
  named-tuple definitions empty, every symbolic expression made only of size
  symbols, integers, arithmetic and torch's size functions, every other string
  free of quotes and line breaks; node metadata other than the module path
  (needed to rebuild hookable submodules) is dropped;
* every tensor record's byte size equals what its dtype, shape, strides and
  offset need (so no record asks torch for memory the file does not hold).

:func:`load_program` writes the checked members to a fresh archive (the JSON
as re-serialised here, ``sample_inputs`` empty) and only then calls
``torch.export.load`` on that copy. Why that is then safe enough: every path
above by which torch's loader runs code or touches files depends on a member,
a field or an operator this module has refused or removed; what remains is
tensors read as raw bytes, a graph of allowlisted aten operators and
plain-data JSON. Running the model can still cost memory and CPU time (an
allowlisted operator can be asked for a huge tensor), which is why
``logitshift audit`` also runs in a child process with resource limits.

This file imports only the standard library and torch, so it can be copied
next to your own code::

    from safeload import load_module
    model = load_module("shifted.pt2")           # hookable, like torch.export.unflatten
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

try:  # inside logitshift: the project's one-line user error
    from ..core.errors import LogitShiftError as _Base
except ImportError:  # copied on its own
    _Base = ValueError  # type: ignore[assignment,misc]

MAX_MEMBERS = 20_000
MAX_JSON_BYTES = 64 << 20
MAX_CONFIG_BYTES = 16 << 20
MAX_EXTRA_BYTES = 1 << 20
MAX_NODES = 200_000
MAX_STRING = 4096
MAX_DIM = 1 << 40
MAX_LITERAL = 1 << 63  # an integer in a symbolic size: what a 64-bit size can hold

#: dtype code (torch/_export/serde/schema.py ScalarType) → bytes per element
DTYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 2, 7: 4, 8: 8, 12: 1, 13: 2}

#: pure aten tensor operators (``torch.ops.aten.<name>.<overload>``, any overload)
ALLOWED_OPS = frozenset(
    """
    _assert_tensor_metadata _assert_scalar _to_copy _native_batch_norm_legit_no_training _softmax _log_softmax
    abs adaptive_avg_pool1d adaptive_avg_pool2d adaptive_max_pool2d add addmm alias amax amin any all argmax argmin
    avg_pool1d avg_pool2d baddbmm batch_norm bitwise_and bitwise_not bitwise_or bmm cat ceil chunk clamp clamp_max
    clamp_min clone constant_pad_nd contiguous conv1d conv2d conv_transpose2d convolution cos cumsum detach div
    einsum elu embedding eq erf exp expand expand_as flatten flip floor floor_divide fmod full full_like gather ge
    gelu group_norm gt hardsigmoid hardswish hardtanh index index_select instance_norm layer_norm le leaky_relu
    lift_fresh_copy linear log log_softmax logical_and logical_not logical_or logsumexp lt masked_fill matmul max
    max_pool1d max_pool2d max_pool2d_with_indices maximum mean min minimum mish mm mul native_layer_norm ne neg norm
    ones ones_like pad permute pow prelu reciprocal relu relu6 remainder repeat reshape round rsqrt rsub scalar_tensor
    scatter select sigmoid sign silu sin slice softmax softplus split split_with_sizes sqrt square squeeze stack std
    sub sum sym_size t tanh to topk transpose type_as unbind unflatten unsqueeze upsample_bilinear2d
    upsample_nearest2d var view where zeros zeros_like dropout
    scaled_dot_product_attention roll
    diagonal exp2 eye linalg_solve log2 new_zeros fill
    """.split()
)  # scaled_dot_product_attention: a ViT's nn.MultiheadAttention; roll: Swin's shifted windows (issue 17);
# diagonal … log2: the fit term of a signed map (shift.FitShift: a ridge solve, a power-of-two rounding step);
# new_zeros, fill: Swin's attention mask, filled in place (in-place writes are checked by _check_writes)
#: in-place forms of the pure operators (``relu_``, ``add_``…) are as pure; these stay refused whatever the suffix
REFUSED_OPS = frozenset({"from_file", "_from_file", "copy", "set", "print", "save", "bernoulli", "rand", "randn", "normal"})
#: operators whose schema declares a fresh output but which return their input itself (dropout in eval mode, a
#: ``type_as`` to the same type) or a view of it (``einsum`` of a transpose), measured
#: (``tests/test_safeload.py::test_the_operators_that_return_their_input_are_the_ones_listed``): an in-place write into
#: their output writes into the input. Every other aliasing output is read from the operator's schema.
RETURNS_INPUT = frozenset({"dropout", "type_as", "einsum"})
#: Python integer arithmetic on sizes (``_operator.<name>``)
ALLOWED_SYM_OPS = frozenset({"add", "sub", "mul", "floordiv", "mod", "neg", "truediv", "eq", "ne", "ge", "gt", "le", "lt"})
ALLOWED_ARGS = frozenset(
    {
        "as_none",
        "as_tensor",
        "as_tensors",
        "as_int",
        "as_ints",
        "as_float",
        "as_floats",
        "as_string",
        "as_strings",
        "as_sym_int",
        "as_sym_ints",
        "as_scalar_type",
        "as_memory_format",
        "as_layout",
        "as_device",
        "as_bool",
        "as_bools",
        "as_sym_bool",
        "as_sym_bools",
        "as_optional_tensors",
        "as_sym_float",
        "as_sym_floats",
        "as_optional_tensor",
        "as_int_lists",
        "as_float_lists",
    }
)
SYMPY_NAMES = frozenset(
    {
        "FloorDiv",
        "ModularIndexing",
        "Where",
        "PythonMod",
        "Mod",
        "CleanDiv",
        "CeilToInt",
        "FloorToInt",
        "CeilDiv",
        "Max",
        "Min",
        "IntTrueDiv",
        "TruncToInt",
        "True",
        "False",
        "Symbol",
        "Integer",
        "Rational",
        "Add",
        "Mul",
        "positive",
        "negative",
        "nonnegative",
        "integer",
        "real",
        "finite",
    }
)
TREESPEC_TYPES = frozenset({None, "builtins.tuple", "builtins.list", "builtins.dict", "collections.OrderedDict"})
_SAFE = re.compile(r"[A-Za-z0-9_.,:;\-\[\]() =<>+*/%@|#']*")
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,200}")
_SYM_TOKEN = re.compile(
    r"\s*(?:(?P<name>[A-Za-z_][A-Za-z0-9_]*)|'(?P<quoted>[A-Za-z0-9_]*)'|(?P<num>\d+(?:\.\d+)?)|(?P<op>\*\*|//|[-+*/%(),<>=!]))"
)
_SYMBOL = re.compile(r"[suqcfzbpx]\d+|[su]\d+_\d+")
_OP = re.compile(r"torch\.ops\.aten\.([a-z0-9_]+)\.([A-Za-z0-9_]+)")
_WEIGHT = re.compile(r"weight_\d+")
_CONSTANT = re.compile(r"tensor_\w+")


class UnsafeModelFile(_Base):
    """The file is not a plain ``torch.export`` program this module can vouch for (one-line message)."""


def _refuse(path: str | os.PathLike, why: str) -> UnsafeModelFile:
    return UnsafeModelFile(f"model file {str(path)!r}: {why}")


# ----------------------------------------------------------------------------- archive


def _member_kind(rel: str) -> str | None:
    """What a member (path below the archive's root folder) is, or ``None`` if a plain export never writes it."""
    if rel in ("archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id"):
        return "meta"
    if rel == "models/model.json":
        return "graph"
    if rel == "data/weights/model_weights_config.json":
        return "weights_config"
    if rel == "data/constants/model_constants_config.json":
        return "constants_config"
    if rel == "data/sample_inputs/model.pt":
        return "sample_inputs"
    if rel.startswith("data/weights/") and _WEIGHT.fullmatch(rel[len("data/weights/") :]):
        return "weight"
    if rel.startswith("data/constants/") and _CONSTANT.fullmatch(rel[len("data/constants/") :]):
        return "constant"
    if rel.startswith("extra/") and _NAME.fullmatch(rel[len("extra/") :]):
        return "extra"
    return None


def _why_refused(rel: str) -> str:
    if rel.endswith(".pt") or rel.endswith(".pkl"):
        return f"member {rel!r} is a pickle (legacy weights or an object), which would run code when loaded"
    if "opaque_obj_" in rel or "custom_obj_" in rel:
        return f"member {rel!r} is a pickled object constant, which would run code when loaded"
    if "aotinductor" in rel or rel.endswith((".so", ".cpp", ".py")):
        return f"member {rel!r} is compiled or source code"
    if rel.startswith("models/"):
        return f"member {rel!r}: only one program, models/model.json, is accepted"
    return f"member {rel!r} is not part of a plain torch.export program"


def _open_archive(path: Path) -> tuple[zipfile.ZipFile, str, dict[str, zipfile.ZipInfo]]:
    if not path.is_file():
        raise _refuse(path, "not found")
    size = path.stat().st_size
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise _refuse(path, f"not a readable zip archive, e.g. truncated ({type(exc).__name__}: {str(exc)[:120]})") from None
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:
        raise _refuse(path, f"{len(infos)} members; at most {MAX_MEMBERS} accepted")
    if not infos:
        raise _refuse(path, "an empty archive")
    roots = {i.filename.split("/", 1)[0] for i in infos}
    if len(roots) != 1 or any("/" not in i.filename for i in infos):
        raise _refuse(path, "members are not all under one root folder, as torch.export.save writes them")
    root = roots.pop()
    members: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos:
        rel = info.filename[len(root) + 1 :]
        if rel in members:
            raise _refuse(path, f"member {rel!r} appears twice")
        if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
            raise _refuse(
                path,
                f"member {rel!r} is compressed ({info.file_size} bytes inflated from {info.compress_size}); torch.export.save stores members uncompressed",
            )
        if info.flag_bits & 0x1:
            raise _refuse(path, f"member {rel!r} is encrypted")
        if info.is_dir():
            continue
        if _member_kind(rel) is None:
            raise _refuse(path, _why_refused(rel))
        total += info.file_size
        members[rel] = info
    if total > size:
        raise _refuse(path, f"members declare {total} bytes in a {size}-byte file (overlapping members)")
    for need in (
        "archive_format",
        "archive_version",
        "models/model.json",
        "data/weights/model_weights_config.json",
        "data/constants/model_constants_config.json",
    ):
        if need not in members:
            raise _refuse(path, f"member {need!r} missing; not a torch.export program")
    return archive, root, members


def _read(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, what: str) -> bytes:
    if info.file_size > limit:
        raise _refuse(path, f"{what} is {info.file_size} bytes; at most {limit} accepted")
    try:
        with archive.open(info) as fh:
            data = fh.read(limit + 1)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise _refuse(path, f"{what} cannot be read ({type(exc).__name__}: {str(exc)[:120]})") from None
    if len(data) != info.file_size:
        raise _refuse(path, f"{what} holds {len(data)} bytes, not the {info.file_size} its header declares")
    return data


def _json(path: Path, data: bytes, what: str) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except RecursionError:
        raise _refuse(path, f"{what} is nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise _refuse(path, f"{what} is not JSON ({type(exc).__name__})") from None


# ----------------------------------------------------------------------------- sample_inputs

#: what a ``torch.save`` of plain tensors names (the ``sample_inputs`` member of an ordinary export)
PLAIN_PICKLE_GLOBALS = frozenset(
    {
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_parameter"),
        ("collections", "OrderedDict"),
        ("torch", "Size"),
        ("builtins", "tuple"),
        ("builtins", "dict"),
        ("builtins", "list"),
    }
    | {("torch", f"{t}Storage") for t in ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool")}
)


def scan_sample_inputs(path: Path, data: bytes) -> None:
    """Refuse a ``sample_inputs`` member whose pickle names anything but plain tensors — without unpickling it.

    Every ordinary ``torch.export.save`` writes this member as a pickle, so it
    is never read by the loader here (it is replaced by an empty member);
    this scan only parses the pickle's opcodes (``pickletools.genops``, which
    runs nothing) so that a file carrying a payload there is reported as the
    hostile file it is rather than audited. A global pushed in a form this
    scan cannot follow (``STACK_GLOBAL`` not right after its two names) is
    refused too.
    """
    import io
    import pickletools

    if not data:
        return
    pickles = [data]
    if data[:2] == b"PK":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as inner:
                infos = [i for i in inner.infolist() if i.filename.endswith(".pkl")]
                if any(i.file_size > MAX_CONFIG_BYTES for i in infos):
                    raise _refuse(path, "the sample_inputs member holds an oversized pickle")
                pickles = [inner.read(i) for i in infos]
        except (zipfile.BadZipFile, OSError, ValueError, EOFError):
            raise _refuse(path, "the sample_inputs member is not a readable torch.save archive") from None
    for blob in pickles:
        strings: list[Any] = []
        try:
            for op, arg, _pos in pickletools.genops(blob):
                if op.name == "GLOBAL":
                    module, _, name = str(arg).partition(" ")
                elif op.name == "STACK_GLOBAL":
                    if len(strings) < 2 or not all(isinstance(v, str) for v in strings[-2:]):
                        raise _refuse(path, "the sample_inputs member is a pickle that hides the functions it calls")
                    module, name = strings[-2], strings[-1]
                elif op.name in ("INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "EXT1", "EXT2", "EXT4"):
                    raise _refuse(
                        path, f"the sample_inputs member is a pickle that builds objects ({op.name}); torch.export.load would run it"
                    )
                else:
                    strings = (
                        (strings + [arg])[-2:]
                        if "UNICODE" in op.name or "STRING" in op.name
                        else (strings if op.name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT") else [])
                    )
                    continue
                strings = []
                if (module, name) not in PLAIN_PICKLE_GLOBALS:
                    raise _refuse(path, f"the sample_inputs member is a pickle that calls {module}.{name}; torch.export.load would run it")
        except (ValueError, EOFError, UnicodeDecodeError) as exc:
            if isinstance(exc, UnsafeModelFile):
                raise
            raise _refuse(path, f"the sample_inputs member is not a readable pickle ({type(exc).__name__})") from None


# ----------------------------------------------------------------------------- graph


def _check_strings(path: Path, obj: Any, where: str) -> None:
    """Every string (and key) plain: no quotes, no line breaks, no backslashes, bounded length; bounded depth."""
    stack = [(obj, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > 64:
            raise _refuse(path, f"{where} is nested more than 64 levels deep")
        if isinstance(item, str):
            if len(item) > MAX_STRING or not _SAFE.fullmatch(item):
                raise _refuse(path, f"{where} holds the string {item[:60]!r}, which is not a plain name or number")
        elif isinstance(item, dict):
            for k, v in item.items():
                stack.append((k, depth + 1))
                stack.append((v, depth + 1))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
        elif not (item is None or isinstance(item, (bool, int, float))):
            raise _refuse(path, f"{where} holds a {type(item).__name__}")


def _check_expr(path: Path, expr: Any, where: str) -> None:
    """A symbolic size (``s77``, ``2*s77 + 1``, ``FloorDiv(s0, 2)``): torch passes it to sympy, which evaluates Python.

    Only size symbols, the names in :data:`SYMPY_NAMES`, numbers below 2^63 and ``+ - * / // % ( ) , < > = !``;
    no power (``**``, ``Pow``): with 512 characters of products a number stays below 10^10000, which sympy
    multiplies at once, where ``9**9**9**9`` never returns."""
    if not isinstance(expr, str) or len(expr) > 512:
        raise _refuse(path, f"{where}: symbolic expression {str(expr)[:60]!r} is not a string of at most 512 characters")
    pos = 0
    while pos < len(expr):
        m = _SYM_TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            if expr[pos:].strip() == "":
                break
            raise _refuse(path, f"{where}: symbolic expression {expr[:60]!r} holds something other than sizes and arithmetic")
        name = m.group("name") or m.group("quoted")
        if name is not None and name not in SYMPY_NAMES and not _SYMBOL.fullmatch(name):
            raise _refuse(path, f"{where}: symbolic expression {expr[:60]!r} names {name!r}, not a size symbol")
        if m.group("op") == "**":
            raise _refuse(
                path, f"{where}: symbolic expression {expr[:60]!r} raises to a power, which sympy would compute (9**9**9**9 never returns)"
            )
        if m.group("num") and float(m.group("num")) >= MAX_LITERAL:
            raise _refuse(
                path, f"{where}: symbolic expression {expr[:60]!r} holds a number of {len(m.group('num'))} digits; sizes fit 64 bits"
            )
        pos = m.end()


def _check_treespec(path: Path, text: Any, where: str) -> None:
    if not isinstance(text, str) or len(text) > 1 << 20:
        raise _refuse(path, f"{where}: not a tree specification")
    try:
        spec = json.loads(text)
    except (RecursionError, ValueError):
        raise _refuse(path, f"{where}: not a JSON tree specification") from None
    stack = [spec[1] if isinstance(spec, list) and len(spec) == 2 else None]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict) or node.get("type") not in TREESPEC_TYPES:
            raise _refuse(
                path,
                f"{where}: tree node of type {str(node.get('type') if isinstance(node, dict) else node)[:60]!r}; only tuples, lists and dicts",
            )
        ctx = node.get("context")
        if ctx is not None:
            try:
                _check_strings(path, json.loads(ctx), where)
            except (RecursionError, ValueError, TypeError):
                raise _refuse(path, f"{where}: tree context is not JSON") from None
        children = node.get("children_spec", [])
        if not isinstance(children, list):
            raise _refuse(path, f"{where}: tree children are not a list")
        stack.extend(children)


def _check_target(path: Path, node: dict) -> None:
    target = node.get("target")
    name = str(node.get("name"))[:60]
    if not isinstance(target, str):
        raise _refuse(path, f"graph node {name!r} has no operator")
    m = _OP.fullmatch(target)
    if m:
        op = m.group(1)
        base = op[:-1] if op.endswith("_") and not op.startswith("_") else op
        if base in REFUSED_OPS or op in REFUSED_OPS or base not in ALLOWED_OPS:
            raise _refuse(
                path,
                f"graph node {name!r} calls {target}, which is not one of the pure tensor operators accepted (files, random state, printing and other side effects are refused)",
            )
        if base == "dropout":
            train = [a.get("arg", {}).get("as_bool") for a in node.get("inputs", []) if a.get("name") == "train"]
            if train != [False]:
                raise _refuse(path, f"graph node {name!r} calls dropout in training mode (random state)")
        return
    if target.startswith("_operator.") and target.split(".", 1)[1] in ALLOWED_SYM_OPS:
        return
    raise _refuse(path, f"graph node {name!r} calls {target[:80]!r}; only torch.ops.aten tensor operators are accepted")


def _check_args(path: Path, args: Any, name: str) -> None:
    if not isinstance(args, list):
        raise _refuse(path, f"graph node {name!r}: arguments are not a list")
    for a in args:
        arg = a.get("arg") if isinstance(a, dict) and "arg" in a else a
        if not isinstance(arg, dict) or len(arg) != 1 or next(iter(arg)) not in ALLOWED_ARGS:
            kind = next(iter(arg)) if isinstance(arg, dict) and arg else type(arg).__name__
            raise _refuse(
                path,
                f"graph node {name!r} takes an argument of kind {str(kind)[:40]!r} (sub-graphs, custom objects and operators are refused)",
            )


def _walk_exprs(path: Path, obj: Any, where: str) -> None:
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for k, v in item.items():
                if k == "expr_str":
                    _check_expr(path, v, where)
                else:
                    stack.append(v)
        elif isinstance(item, list):
            stack.extend(item)


def _tensor_names(args: Any) -> list[str]:
    """The tensor names a node's inputs or outputs list carries (``as_tensor``, ``as_tensors`` and their optional forms)."""
    out = []
    for a in args if isinstance(args, list) else []:
        arg = a.get("arg") if isinstance(a, dict) and "arg" in a else a
        if isinstance(arg, dict):
            singles = [arg.get("as_tensor"), arg.get("as_optional_tensor")]
            for t in [*singles, *(arg.get("as_tensors") or []), *(arg.get("as_optional_tensors") or [])]:
                inner = t.get("as_tensor") if isinstance(t, dict) and isinstance(t.get("as_tensor"), dict) else t
                if isinstance(inner, dict) and "name" in inner:
                    out.append(str(inner["name"]))
    return out


def _schema(path: Path, node: dict, op: str, overload: str):
    """The operator schema (``torch.ops.aten.<op>.<overload>._schema``); an overload this torch does not know is refused."""
    import torch

    try:
        return getattr(getattr(torch.ops.aten, op), overload)._schema
    except (AttributeError, RuntimeError):
        raise _refuse(
            path, f"graph node {str(node.get('name'))[:60]!r} calls {op}.{overload}, an operator overload this torch does not know"
        ) from None


def _bound(path: Path, node: dict, schema) -> dict[str, Any]:
    """The node's arguments by name, as torch binds them (``inputs[i].name``); unknown or repeated names refused."""
    known = {a.name for a in schema.arguments}
    bound: dict[str, Any] = {}
    for a in node.get("inputs") or []:
        name = a.get("name") if isinstance(a, dict) else None
        if not isinstance(name, str) or name not in known or name in bound:
            why = "repeats" if name in bound else "names"
            raise _refuse(
                path,
                f"graph node {str(node.get('name'))[:60]!r} {why} the argument {str(name)[:40]!r}, which {schema.name} does not take "
                + ("twice" if name in bound else f"(it takes {', '.join(sorted(known))[:120]})"),
            )
        bound[name] = a
    return bound


def _flag(bound: dict[str, Any], name: str) -> Any:
    arg = bound.get(name, {}).get("arg")
    return arg.get("as_bool") if isinstance(arg, dict) else None


def _hidden_state_write(path: Path, node: dict, base: str, bound: dict[str, Any]) -> None:
    """``batch_norm`` in training mode, ``instance_norm`` with input statistics and running buffers: they update the
    running statistics in place with no in-place name and no write in their schema."""
    name = str(node.get("name"))[:60]
    if base == "batch_norm" and _flag(bound, "training") is not False:
        raise _refuse(path, f"graph node {name!r} calls batch_norm in training mode, which updates its running statistics at every call")
    if base == "instance_norm" and _flag(bound, "use_input_stats") is not False:
        running = [k for k in ("running_mean", "running_var") if _tensor_names([bound.get(k)] if k in bound else [])]
        if running:
            raise _refuse(
                path, f"graph node {name!r} calls instance_norm with input statistics and {running[0]}, which it updates at every call"
            )


def _check_writes(path: Path, graph: dict, signature: Any) -> None:
    """A model must compute the same function at every call: no write into its weights, buffers or inputs.

    ``torch.export`` keeps in-place operators (``add_``, ``fill_``) in the graph as they were written, so a
    model that counts its calls in a buffer (``count.add_(1)``) and changes its output after the audit's calls
    would pass an operator allowlist. The tensors an operator writes are read from its schema (arguments whose
    alias annotation is a write, ``Tensor(a!)``), looked up by argument name as torch binds them (an argument
    list in another order, an unknown or a repeated name is refused). A write is accepted only into a tensor the
    graph made itself: not a graph input (weight, buffer, input), nor a view of one (outputs whose schema aliases
    an argument, and :data:`RETURNS_INPUT`, propagate); a write by an operator that is not in place (an ``out=``
    form, whatever its overload is named: ``add.out``, ``max.dim_max``, ``topk.values``) is refused; batch and
    instance norm must not update running statistics (:func:`_hidden_state_write`); the signature may not
    declare mutated buffers or inputs.
    """
    specs = signature.get("output_specs", []) if isinstance(signature, dict) else []
    for spec in specs if isinstance(specs, list) else []:
        kinds = [k for k in (spec if isinstance(spec, dict) else {}) if k != "user_output"]
        if kinds:
            raise _refuse(path, f"the graph declares a {kinds[0]!r} output: a model that changes its own state between calls")
    inputs = set(_tensor_names(graph.get("inputs", [])))
    for node in graph["nodes"]:
        m = _OP.fullmatch(str(node.get("target")))
        if m:
            _check_node_writes(path, node, m.group(1), m.group(2), inputs)


def _check_node_writes(path: Path, node: dict, op: str, overload: str, inputs: set[str]) -> None:
    """One node of :func:`_check_writes`; adds its outputs to ``inputs`` when they may alias one of them."""
    schema = _schema(path, node, op, overload)
    bound = _bound(path, node, schema)
    inplace = op.endswith("_") and not op.startswith("_")
    base = op[:-1] if inplace else op
    _hidden_state_write(path, node, base, bound)
    name = str(node.get("name"))[:60]
    aliased = False
    for arg in schema.arguments:
        info = arg.alias_info
        if info is None or arg.name not in bound:
            continue
        tensors = _tensor_names([bound[arg.name]])
        if info.is_write and not inplace:
            raise _refuse(
                path, f"graph node {name!r} calls {op}.{overload}, an out= form that writes into a tensor it is given ({arg.name})"
            )
        hit = [t for t in tensors if t in inputs]
        if info.is_write and hit:
            raise _refuse(
                path,
                f"graph node {name!r} writes in place ({op}) into {hit[0][:60]!r}, a weight, buffer or input "
                "of the model: its output could change from call to call (after an audit)",
            )
        aliased = aliased or bool(hit)
    returns_alias = any(r.alias_info is not None for r in schema.returns)
    fed = any(t in inputs for t in _tensor_names(node.get("inputs")))
    if (aliased and returns_alias) or (base in RETURNS_INPUT and fed):
        inputs.update(_tensor_names(node.get("outputs")))


def check_graph(path: str | os.PathLike, program: Any) -> dict:  # noqa: C901 — one walk over the graph JSON checks every field in order; the checks are small helpers already
    """The graph JSON (``models/model.json``), checked; returns the copy torch will read (metadata stripped)."""
    path = Path(path)
    top = {"graph_module", "opset_version", "range_constraints", "schema_version", "verifiers", "torch_version", "guards_code"}
    if not isinstance(program, dict) or not set(program) <= top or "graph_module" not in program:
        raise _refuse(path, "models/model.json is not a torch.export program")
    if program.get("guards_code"):
        raise _refuse(path, "models/model.json carries guards_code, Python source that torch would execute")
    gm = program["graph_module"]
    if not isinstance(gm, dict) or not set(gm) <= {"graph", "signature", "module_call_graph", "metadata", "treespec_namedtuple_fields"}:
        raise _refuse(path, "models/model.json: graph_module has unknown fields")
    if gm.get("treespec_namedtuple_fields"):
        raise _refuse(path, "models/model.json defines named tuples (their definitions are compiled by Python)")
    graph = gm.get("graph")
    if not isinstance(graph, dict) or not isinstance(graph.get("nodes"), list):
        raise _refuse(path, "models/model.json has no graph")
    if graph.get("custom_obj_values"):
        raise _refuse(path, "models/model.json uses custom objects (pickled code)")
    nodes = graph["nodes"]
    if len(nodes) > MAX_NODES:
        raise _refuse(path, f"the graph has {len(nodes)} nodes; at most {MAX_NODES} accepted")
    for node in nodes:
        if not isinstance(node, dict):
            raise _refuse(path, "a graph node is not an object")
        _check_target(path, node)
        name = str(node.get("name"))[:60]
        _check_args(path, node.get("inputs"), name)
        _check_args(path, node.get("outputs"), name)
        meta = node.get("metadata") or {}
        node["metadata"] = {"nn_module_stack": meta["nn_module_stack"]} if isinstance(meta, dict) and "nn_module_stack" in meta else {}
    _check_writes(path, graph, gm.get("signature"))
    _check_args(path, graph.get("inputs", []), "graph inputs")
    _check_args(path, graph.get("outputs", []), "graph outputs")
    for key in ("range_constraints",):
        for expr in program.get(key) or {}:
            _check_expr(path, expr, key)
    _walk_exprs(path, program, "models/model.json")
    calls = gm.get("module_call_graph") or []
    specs = []  # (signature, its tree specs): checked on their own, since they are JSON inside strings
    for entry in calls if isinstance(calls, list) else [None]:
        if not isinstance(entry, dict):
            raise _refuse(path, "models/model.json: module_call_graph is malformed")
        sig = entry.get("signature")
        if isinstance(sig, dict):
            pair = {k: sig.pop(k) for k in ("in_spec", "out_spec") if k in sig}
            for k, text in pair.items():
                _check_treespec(path, text, k)
            specs.append((sig, pair))
    _check_strings(path, program, "models/model.json")
    for sig, pair in specs:
        sig.update(pair)
    return program


# ----------------------------------------------------------------------------- tensors


def _span(path: Path, meta: Any, fqn: str) -> int:
    """Bytes a tensor record needs: itemsize × (offset + Σ (size−1)·stride + 1)."""
    if not isinstance(meta, dict):
        raise _refuse(path, f"tensor {fqn!r} has no metadata")
    code = meta.get("dtype")
    itemsize = DTYPE_SIZE.get(code) if isinstance(code, int) else None
    if itemsize is None:
        raise _refuse(path, f"tensor {fqn!r} has dtype code {meta.get('dtype')!r}; accepted: float16/32/64, bfloat16, integers, bool")
    if meta.get("layout") != 7:
        raise _refuse(path, f"tensor {fqn!r} is not a dense (strided) tensor")
    device = meta.get("device")
    if not isinstance(device, dict) or device.get("type") != "cpu":
        raise _refuse(path, f"tensor {fqn!r} is stored for device {device!r}; export the program on the CPU")

    def ints(key: str) -> list[int]:
        raw = meta.get(key)
        raw = raw if isinstance(raw, list) else [raw]
        out = []
        for v in raw:
            if not (
                isinstance(v, dict)
                and isinstance(v.get("as_int"), int)
                and not isinstance(v.get("as_int"), bool)
                and 0 <= v["as_int"] <= MAX_DIM
            ):
                raise _refuse(path, f"tensor {fqn!r}: {key} must be whole numbers from 0 to 2^40")
            out.append(v["as_int"])
        return out

    sizes, strides, (offset,) = ints("sizes"), ints("strides"), ints("storage_offset")
    if len(sizes) != len(strides) or len(sizes) > 16:
        raise _refuse(path, f"tensor {fqn!r}: {len(sizes)} sizes but {len(strides)} strides")
    if 0 in sizes:
        return 0
    return itemsize * (offset + sum((s - 1) * st for s, st in zip(sizes, strides)) + 1)


def check_payloads(path: str | os.PathLike, config: Any, kind: str, records: dict[str, int]) -> None:
    """A weights or constants config: no pickles, and every record exactly the bytes its tensors need."""
    path = Path(path)
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict) or set(config) != {"config"}:
        raise _refuse(path, f"the {kind} config is malformed")
    need: dict[str, int] = {}
    pattern = _WEIGHT if kind == "weights" else _CONSTANT
    for fqn, entry in entries.items():
        if not isinstance(entry, dict) or not set(entry) <= {"path_name", "is_param", "use_pickle", "tensor_meta"}:
            raise _refuse(path, f"{kind} entry {str(fqn)[:60]!r} is malformed")
        if entry.get("use_pickle") is not False:
            raise _refuse(path, f"{kind} entry {str(fqn)[:60]!r} is stored as a pickle (use_pickle), which would run code when loaded")
        name = entry.get("path_name")
        if not isinstance(name, str) or not pattern.fullmatch(name):
            why = (
                "a pickled object constant"
                if isinstance(name, str) and name.startswith(("opaque_obj_", "custom_obj_"))
                else "not a tensor record"
            )
            raise _refuse(path, f"{kind} entry {str(fqn)[:60]!r} points at {str(name)[:60]!r}, {why}, which is refused")
        if name not in records:
            raise _refuse(path, f"{kind} entry {str(fqn)[:60]!r}: record {name!r} missing")
        span = _span(path, entry.get("tensor_meta"), str(fqn)[:60])
        if span > records[name]:
            raise _refuse(path, f"{kind} entry {str(fqn)[:60]!r} needs {span} bytes; its record holds {records[name]}")
        need[name] = max(need.get(name, 0), span)
    for name, nbytes in records.items():
        if need.get(name) != nbytes:
            raise _refuse(path, f"record {name!r} holds {nbytes} bytes; its tensors need {need.get(name, 0)}")
    _check_strings(path, config, f"the {kind} config")


# ----------------------------------------------------------------------------- entry points


def check_pt2(path: str | os.PathLike, copy_to: str | os.PathLike | None = None) -> dict[str, str]:
    """Check ``path`` as described in the module docstring; return its extra files (``extra/<name>`` → text).

    With ``copy_to``, also write the checked archive there (graph JSON
    re-serialised, ``sample_inputs`` empty), ready for ``torch.export.load``.
    Raises :class:`UnsafeModelFile` with a one-line reason otherwise.
    """
    path = Path(path)
    archive, _root, members = _open_archive(path)
    with archive:
        fmt = _read(path, archive, members["archive_format"], 64, "archive_format").strip()
        if fmt != b"pt2":
            raise _refuse(path, f"archive_format is {fmt[:20]!r}, not a pt2 program")
        graph = check_graph(
            path, _json(path, _read(path, archive, members["models/model.json"], MAX_JSON_BYTES, "models/model.json"), "models/model.json")
        )
        configs = {}
        for kind, folder, pattern in (("weights", "data/weights/", _WEIGHT), ("constants", "data/constants/", _CONSTANT)):
            rel = f"{folder}model_{kind}_config.json"
            config = _json(path, _read(path, archive, members[rel], MAX_CONFIG_BYTES, rel), rel)
            records = {
                r[len(folder) :]: i.file_size for r, i in members.items() if r.startswith(folder) and pattern.fullmatch(r[len(folder) :])
            }
            check_payloads(path, config, kind, records)
            configs[rel] = config
        if "data/sample_inputs/model.pt" in members:
            scan_sample_inputs(
                path, _read(path, archive, members["data/sample_inputs/model.pt"], MAX_JSON_BYTES, "data/sample_inputs/model.pt")
            )
        extra = {}
        for rel, info in members.items():
            if rel.startswith("extra/"):
                try:
                    extra[rel[len("extra/") :]] = _read(path, archive, info, MAX_EXTRA_BYTES, rel).decode("utf-8")
                except UnicodeDecodeError:
                    raise _refuse(path, f"{rel} is not UTF-8 text") from None
        if copy_to is not None:
            with zipfile.ZipFile(copy_to, "w", zipfile.ZIP_STORED) as out:
                for rel, info in members.items():
                    name = f"archive/{rel}"
                    member = _member_kind(rel)
                    if member == "sample_inputs":
                        out.writestr(name, b"")  # never read: every plain torch.export.save pickles it
                    elif member == "graph":
                        out.writestr(name, json.dumps(graph))
                    elif rel in configs:
                        out.writestr(name, json.dumps(configs[rel]))
                    elif member == "extra":
                        out.writestr(name, extra[rel[len("extra/") :]])
                    else:
                        with archive.open(info) as src, out.open(name, "w") as dst:
                            shutil.copyfileobj(src, dst, 1 << 20)
                if "data/sample_inputs/model.pt" not in members:
                    out.writestr("archive/data/sample_inputs/model.pt", b"")
    return extra


def load_program(path: str | os.PathLike, extra_files: dict[str, Any] | None = None):
    """``torch.export.load`` of a checked copy of ``path`` (see :func:`check_pt2`); fills ``extra_files`` like torch's."""
    import torch

    with tempfile.TemporaryDirectory(prefix="safeload.") as tmp:
        copy = Path(tmp) / "checked.pt2"
        extra = check_pt2(path, copy)
        try:
            program = torch.export.load(str(copy))
        except Exception as exc:  # noqa: BLE001 - torch's loader errors are many; one line
            text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise _refuse(path, f"passed the checks but torch cannot load it ({type(exc).__name__}: {text})") from None
    if extra_files is not None:
        for key in list(extra_files):
            extra_files[key] = extra.get(key, extra_files[key])
    return program


def load_module(path: str | os.PathLike, extra_files: dict[str, Any] | None = None):
    """The checked program as a hookable module tree (``torch.export.unflatten``; a program it cannot rebuild is
    refused: its flat ``program.module()`` has no layers to hook), in eval mode where supported.

    No resource limits: the checks bound what the file can make torch read, not what running the model costs
    (an allowlisted operator can be asked for a huge tensor, a long loop of them for CPU time). Used alone, run it
    in a process with limits of your own (``logitshift audit`` runs in :mod:`logitshift.sandbox`'s child)."""
    import torch

    program = load_program(path, extra_files)
    try:
        module = torch.export.unflatten(program)
    except Exception as exc:  # noqa: BLE001 - a flat program.module() has no layers to hook: refused, not handed on
        text = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        raise _refuse(
            path,
            f"torch.export.unflatten cannot rebuild its layers ({type(exc).__name__}: {text}); export the model without changing its module tree",
        ) from None
    try:
        module.eval()
    except Exception:  # noqa: BLE001 - some unflattened modules refuse eval(); they have no train-mode layers
        pass
    return module


__all__ = ["ALLOWED_OPS", "UnsafeModelFile", "check_graph", "check_payloads", "check_pt2", "load_module", "load_program"]
