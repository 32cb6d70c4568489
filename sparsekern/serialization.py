"""save_sparse / load_sparse: packed weights into a fresh instance of an unmodified model class.

Two file formats, chosen by the path's suffix on save and by the file's first bytes on load:

``*.safetensors`` (no pickle anywhere): the tensors ``sparse.<layer>.{values,indices,offsets,
bias}`` of every sparse layer and ``dense.<state key>`` of the rest of the state; the
metadata (strings) holds ``format`` (the tag below) and ``layers``, a JSON object
{layer name: {"kind": "linear" | "conv2d", "layout", "shape": [M, K], "bias": bool, and for
a conv "out_channels", "in_channels", "kernel_size", "stride", "padding", "dilation",
"padding_mode", "groups"}}, and ``aliases`` when the state has tied tensors (a language
model's head sharing the token embedding): {``dense.<key>``: the ``dense.<key>`` stored in
the file}, each tensor stored once.

any other suffix (``*.pt``): a dict read with ``torch.load(weights_only=True)``: ``"sparse"``
holds each SparseLinear (layout, shape, format tensors, bias), ``"sparse_conv2d"`` each
SparseConv2d (the same plus its geometry), ``"dense"`` the state of everything else.

``load_sparse`` checks the whole file against the model first (every format tensor through
sparsekern.formats' validation: dtypes, shapes, offsets, index ranges, 2:4 metadata; bias
shape and dtype; conv geometry; the dense state's keys, shapes and dtypes) and builds every
new layer before it changes the model, so a bad file leaves the model untouched.
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import sys
import zipfile
from dataclasses import dataclass, field
from typing import Dict, List, Tuple, Union

import torch
from torch import nn

from . import _layers
from ._packed_module import decode_extra_state, outside_inference_mode
from .conv import SparseConv2d, check_geometry
from .formats import from_parts
from .nn import SparseLinear, _set_submodule

log = logging.getLogger("sparsekern")

_FORMAT_TAG = "sparsekern-sparse-model/1"
_EXTRA_STATE = "_extra_state"  # torch's suffix of a module's extra state in a state_dict
_FMT_TENSORS = ("values", "indices", "offsets")
_CONV_FIELDS = ("out_channels", "in_channels", "kernel_size", "stride", "padding", "dilation",
                "padding_mode", "groups")

PathLike = Union[str, os.PathLike]


# -- save ---------------------------------------------------------------------------------

def _entry(mod: nn.Module) -> dict:
    """One sparse layer: its description (plain ints/strs/lists) and its tensors."""
    if isinstance(mod, SparseConv2d):
        e = mod.geometry()
        e.update(kind="conv2d", groups=1)
    else:
        e = {"kind": "linear", "layout": mod.layout,
             "shape": [mod.out_features, mod.in_features]}
    e.update(values=mod.values.detach(), indices=mod.indices, offsets=mod.offsets,
             bias=None if mod.bias is None else mod.bias.detach())
    return e


def _check_args(fn: str, model, path, what: str) -> None:
    """TypeError naming ``fn`` and the argument when ``model`` is not an nn.Module or ``path``
    not a str/PathLike (the two swapped, a path of None)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{fn}: model must be an nn.Module, got {type(model).__name__}; call "
                        f"{fn}(model, path)")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{fn}: path must be a str or os.PathLike ({what}), got "
                        f"{type(path).__name__}")


def _folder_problem(folder: str) -> Tuple[type, str]:
    """(exception class, why) for a ``folder`` that is not an existing folder. A file where
    the folder (or one above it) should be is named as a file: "does not exist" would send
    the user looking for a folder that is there, as a file."""
    part = folder
    while not os.path.lexists(part) and os.path.dirname(part) != part:
        part = os.path.dirname(part)
    if not os.path.lexists(part) or os.path.isdir(part):
        return FileNotFoundError, f"the folder {folder!r}, which does not exist"
    if part == folder:
        return NotADirectoryError, f"{folder!r}, which is a file, not a folder"
    return NotADirectoryError, (f"the folder {folder!r}, which cannot exist: {part!r} is a "
                                f"file, not a folder")


def save_sparse(model: nn.Module, path: PathLike) -> None:
    """Save ``model`` with every SparseLinear and SparseConv2d packed.

    ``path`` ending in ``.safetensors`` writes a safetensors file (no pickle); any other
    path a ``torch.save`` dict of plain tensors/ints/strs (``weights_only`` loadable).
    """
    _check_args("save_sparse", model, path, "a .safetensors or .pt file")
    model = _layers.compiled_inner(model) or model  # the file names the plain model's layers
    entries = {n: _entry(m) for n, m in model.named_modules()
               if isinstance(m, (SparseLinear, SparseConv2d))}
    if "" in entries:
        raise ValueError("save_sparse needs a model that contains the sparse layers, not a bare "
                         "sparse layer (save its state_dict instead)")
    if os.path.isdir(os.fspath(path)) or os.fspath(path).endswith(os.sep):
        raise IsADirectoryError(f"save_sparse: path {os.fspath(path)!r} is a folder; expected a "
                                f"file path ending in .safetensors or .pt")
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    if not os.path.isdir(folder):  # else safetensors names its temporary file, not path
        err, why = _folder_problem(folder)
        raise err(f"save_sparse: path {os.fspath(path)!r} is in {why}; expected a path in an "
                  f"existing folder")
    prefixes = tuple(n + "." for n in entries)
    dense = {k: v for k, v in model.state_dict().items() if not k.startswith(prefixes)}
    if os.fspath(path).endswith(".safetensors"):
        _save_safetensors(entries, dense, path)
        return
    linear = {n: {k: v for k, v in e.items() if k != "kind"}
              for n, e in entries.items() if e["kind"] == "linear"}
    conv = {n: {k: v for k, v in e.items() if k != "kind"}
            for n, e in entries.items() if e["kind"] == "conv2d"}
    torch.save({"format": _FORMAT_TAG, "sparse": linear, "sparse_conv2d": conv, "dense": dense},
               path)


def _safetensors():
    """The safetensors package (imported only for .safetensors files)."""
    try:
        import safetensors.torch
    except ImportError:
        raise ImportError("a .safetensors file needs the safetensors package: pip install "
                          "safetensors (or sparsekern[safetensors])") from None
    return safetensors


def _save_safetensors(entries: Dict[str, dict], dense: Dict[str, object], path) -> None:
    save_file = _safetensors().torch.save_file
    tensors: Dict[str, torch.Tensor] = {}
    seen = set()
    views: Dict[tuple, str] = {}  # the exact view of a dense tensor -> its first key
    aliases: Dict[str, str] = {}  # a dense key -> the key holding the same tensor (tied)

    def put(key: str, t: torch.Tensor, may_alias: bool = False) -> None:
        t = t.detach()
        view = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape),
                tuple(t.stride()), t.dtype) if t.numel() else None
        if may_alias and view in views:  # a tied weight: stored once, named in the metadata
            aliases[key] = views[view]
            return
        if may_alias and view is not None:
            views[view] = key
        t = t.contiguous()
        ptr = (t.device, t.untyped_storage().data_ptr()) if t.numel() else None
        if ptr in seen:  # safetensors refuses shared storage (overlapping views): a copy
            t = t.clone()
        elif ptr is not None:
            seen.add(ptr)
        tensors[key] = t

    layers = {}
    for name, e in entries.items():
        for k in _FMT_TENSORS:
            put(f"sparse.{name}.{k}", e[k])
        if e["bias"] is not None:
            put(f"sparse.{name}.bias", e["bias"])
        layers[name] = {k: v for k, v in e.items() if k not in _FMT_TENSORS + ("bias",)}
        layers[name]["bias"] = e["bias"] is not None
    for key, v in dense.items():
        if not isinstance(v, torch.Tensor):
            raise ValueError(f"state entry {key!r} is a {type(v).__name__}, not a tensor; a "
                             f".safetensors file holds tensors only (save to a .pt path)")
        put(f"dense.{key}", v, may_alias=True)
    meta = {"format": _FORMAT_TAG, "layers": json.dumps(layers)}
    if aliases:
        meta["aliases"] = json.dumps(aliases)
    save_file(tensors, os.fspath(path), metadata=meta)


# -- read ---------------------------------------------------------------------------------

@dataclass
class _Saved:
    """A file's content: {layer: entry with "kind" and tensors} and the dense state."""

    layers: Dict[str, dict]
    dense: Dict[str, object]
    #: A plain state_dict file (save_pretrained) leaves out tied tensors: a model tensor that
    #: is missing but shares its storage with one the file holds takes that one's value.
    tied_may_be_missing: bool = False
    #: A save_sparse safetensors file's ties ({dense key: the dense key it shares}, without
    #: "dense."): each must be a tie of the model too (see _check_aliases).
    aliases: Dict[str, str] = field(default_factory=dict)


def _is_safetensors(path: PathLike) -> bool:
    # A safetensors file starts with its header's length (8 bytes, little-endian) and the
    # JSON header itself ('{'); a torch.save file is a zip ("PK").
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


#: A Hugging Face folder's weight files: the single file and the index of its shards, per
#: serialization (save_pretrained's default safetensors, or safe_serialization=False).
_HF_WEIGHTS = (("model.safetensors", "model.safetensors.index.json"),
               ("pytorch_model.bin", "pytorch_model.bin.index.json"))


def _folder_files(path: PathLike) -> List[str]:
    """The weight files of a Hugging Face model folder (see _HF_WEIGHTS): the single file, or
    the shards its index names."""
    for single, index_name in _HF_WEIGHTS:
        index = os.path.join(path, index_name)
        if os.path.isfile(index):
            try:
                with open(index) as f:
                    weight_map = json.load(f)["weight_map"]
                names = sorted(set(weight_map.values()))
            except (ValueError, KeyError, TypeError, AttributeError):
                raise ValueError(f"{index} is not a weights index (a JSON object with a "
                                 f"'weight_map' of file names)") from None
            return [os.path.join(path, n) for n in names]
        if os.path.isfile(os.path.join(path, single)):
            return [os.path.join(path, single)]
    raise ValueError(f"{path} is a folder without model.safetensors, pytorch_model.bin or "
                     f"their index; expected a file from sparsekern.save_sparse or a Hugging "
                     f"Face save_pretrained folder")


def _torch_load(path: PathLike, map_location):
    """torch.load(weights_only=True) of a zip-format file; other bytes raise ValueError."""
    # save_sparse writes torch's zip format: other bytes (empty, truncated: no central
    # directory, foreign) are not its file. A missing file stays FileNotFoundError.
    with open(path, "rb") as f:
        is_zip = zipfile.is_zipfile(f)
    if not is_zip:
        raise ValueError(f"{path} is not a readable file written by sparsekern.save_sparse "
                         f"(neither a safetensors file nor torch's zip format)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} is not a readable file written by sparsekern.save_sparse "
                         f"({type(e).__name__}: {e})") from None
    except RuntimeError as e:  # torch's zip reader on damaged records; not device errors
        if "PytorchStreamReader" not in str(e):
            raise
        raise ValueError(f"{path} is not a readable file written by sparsekern.save_sparse "
                         f"({e})") from None


def _is_state_dict(blob) -> bool:
    """A plain state_dict: str keys, and tensors (or a sparse layer's extra state) as values."""
    return (isinstance(blob, dict) and "format" not in blob and
            all(isinstance(k, str) and (isinstance(v, torch.Tensor) or k.endswith(_EXTRA_STATE))
                for k, v in blob.items()))


def _read(path: PathLike, map_location) -> _Saved:
    if os.path.isdir(path):
        return _read_state_dict_files(path, _folder_files(path), map_location)
    if _is_safetensors(path):
        return _read_safetensors(path, map_location)
    blob = _torch_load(path, map_location)
    if _is_state_dict(blob):
        return _state_dict_saved(path, dict(blob))
    if not isinstance(blob, dict) or blob.get("format") != _FORMAT_TAG:
        raise ValueError(f"{path} is not a file written by sparsekern.save_sparse nor a "
                         f"state_dict (a dict of named tensors)")
    layers: Dict[str, dict] = {}
    for key, kind in (("sparse", "linear"), ("sparse_conv2d", "conv2d")):
        part = blob.get(key, {})
        if not isinstance(part, dict):
            raise ValueError(f"{path}: {key!r} is a {type(part).__name__}, expected a dict")
        for name, e in part.items():
            if not isinstance(e, dict):
                raise ValueError(f"{path}: the entry of layer {name!r} is a "
                                 f"{type(e).__name__}, expected a dict")
            if name in layers:
                raise ValueError(f"{path}: layer {name!r} is saved twice")
            layers[name] = dict(e, kind=kind)
    dense = blob.get("dense", {})
    if not isinstance(dense, dict):
        raise ValueError(f"{path}: 'dense' is a {type(dense).__name__}, expected a dict")
    return _Saved(layers, dense)


def _resolve_aliases(path: PathLike, meta: dict, tensors: Dict[str, torch.Tensor]
                     ) -> Dict[str, str]:
    """Adds the tied dense tensors the metadata 'aliases' names ({key: key stored}) to
    ``tensors``, after checking that each names a dense tensor absent from the file and one
    the file holds. Returns the aliases as dense state keys (without "dense."): whether the
    model ties them too is checked against the model (_check_aliases)."""
    if "aliases" not in meta:
        return {}
    try:
        aliases = json.loads(meta["aliases"])
    except ValueError:
        raise ValueError(f"{path}: the metadata 'aliases' is not valid JSON") from None
    if not isinstance(aliases, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                for k, v in aliases.items()):
        raise ValueError(f"{path}: the metadata 'aliases' must be a JSON object of strings")
    for key, target in aliases.items():
        if not key.startswith("dense.") or key in tensors:
            raise ValueError(f"{path}: alias {key!r} must name a dense tensor the file does "
                             f"not hold")
        if not target.startswith("dense.") or target not in tensors:
            raise ValueError(f"{path}: alias {key!r} -> {target!r}: no such dense tensor in "
                             f"the file")
    for key, target in aliases.items():
        tensors[key] = tensors[target]
    return {k[len("dense."):]: t[len("dense."):] for k, t in aliases.items()}


def _view(t: torch.Tensor) -> tuple:
    """The exact view of a tensor: two state keys with the same view are tied (one tensor),
    as save_sparse records ties."""
    return (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape),
            tuple(t.stride()), t.dtype)


def _check_aliases(model: nn.Module, path: PathLike, aliases: Dict[str, str]) -> None:
    """A file's alias stands for a tensor the file stores once because the saved model held
    it under both names: the model loaded must tie the two names too (the same tensor),
    else the alias would load one tensor's values into another (a BatchNorm's weight from
    its bias). ValueError naming the alias otherwise; called before the model changes."""
    if not aliases:
        return
    own = model.state_dict()
    for key, target in aliases.items():
        alias = f"alias {'dense.' + key!r} -> {'dense.' + target!r}"
        absent = [k for k in (key, target) if not isinstance(own.get(k), torch.Tensor)]
        if absent:
            raise ValueError(f"{path}: {alias}: {type(model).__name__} has no tensor "
                             f"{absent[0]!r}, so it cannot tie {key!r} to {target!r}; expected "
                             f"aliases only between tensors the model shares (as save_sparse "
                             f"writes them)")
        a, b = own[key], own[target]
        if not a.numel() or _view(a) != _view(b):
            raise ValueError(f"{path}: {alias}: {type(model).__name__} does not tie {key!r} "
                             f"to {target!r} (they are different tensors), so the file's "
                             f"{target!r} cannot stand for {key!r}; expected aliases only "
                             f"between tensors the model shares (as save_sparse writes them)")


def _own_storage(t: torch.Tensor) -> torch.Tensor:
    """An empty tensor read from a safetensors file points into the file's mapping at its
    neighbour's address; torch.save then refuses the model ("multiple tensors ... view the
    same data as different types"). An empty one gets its own storage."""
    return t if t.numel() else torch.empty(t.shape, dtype=t.dtype, device=t.device)


def _open_safetensors(path: PathLike, map_location) -> Tuple[dict, Dict[str, torch.Tensor]]:
    """(metadata, tensors) of one safetensors file."""
    safe_open = _safetensors().safe_open
    if map_location is None:
        device = "cpu"
    elif isinstance(map_location, (str, torch.device)):
        device = str(map_location)
    else:
        raise TypeError(f"map_location must be None, a str or a torch.device for a "
                        f".safetensors file, got {type(map_location).__name__}")
    try:
        with safe_open(os.fspath(path), "pt", device=device) as f:
            return f.metadata() or {}, {k: _own_storage(f.get_tensor(k)) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for a corrupt file
        raise ValueError(f"{path} is not a readable safetensors file: {e}") from None


def _read_state_dict_files(path: PathLike, files: List[str], map_location) -> _Saved:
    """A sparsified model's plain state_dict in safetensors or torch.save files (Hugging
    Face's ``save_pretrained``, ``safetensors.torch.save_file(model.state_dict())``,
    ``torch.save(model.state_dict())``), one or several (shards): each sparse
    layer is the prefix of a ``<layer>._extra_state`` uint8 tensor (its layout and shape,
    see sparsekern._packed_module) beside ``<layer>.values``, ``.indices``, ``.offsets`` and,
    when it has one, ``.bias``; everything else is the dense state."""
    tensors: Dict[str, torch.Tensor] = {}
    for file in files:
        if _is_safetensors(file):
            part = _open_safetensors(file, map_location)[1]
        else:
            part = _torch_load(file, map_location)
            if not isinstance(part, dict) or not all(isinstance(k, str) for k in part):
                raise ValueError(f"{file} is not a state_dict (a dict of named tensors)")
        for k, t in part.items():
            if k in tensors:
                raise ValueError(f"{path}: tensor {k!r} is stored in more than one file")
            tensors[k] = t
    return _state_dict_saved(path, tensors)


def _state_dict_saved(path: PathLike, tensors: Dict[str, torch.Tensor]) -> _Saved:
    """The sparse layers and dense state of a plain state_dict (consumes ``tensors``)."""
    layers: Dict[str, dict] = {}
    for key in [k for k in tensors if k.endswith("." + _EXTRA_STATE)]:
        prefix = key[:-len(_EXTRA_STATE)]
        if prefix + "values" not in tensors:
            continue  # another module's extra state: dense state
        try:
            e = dict(decode_extra_state(tensors.pop(key)))
        except ValueError as err:
            raise ValueError(f"{path}: {key!r}: {err}") from None
        e["kind"] = "conv2d" if "out_channels" in e else "linear"
        for k in _FMT_TENSORS:
            if prefix + k not in tensors:
                raise ValueError(f"{path}: layer {prefix[:-1]!r} has no tensor {prefix + k!r}")
            e[k] = tensors.pop(prefix + k)
        e["bias"] = tensors.pop(prefix + "bias", None)
        layers[prefix[:-1]] = e
    # No sparse layer (e.g. sparsify(layout="auto") left every layer dense): the whole file is
    # the dense state, loaded as strictly as the rest.
    return _Saved(layers, dict(tensors), tied_may_be_missing=True)


def _read_safetensors(path: PathLike, map_location) -> _Saved:
    meta, tensors = _open_safetensors(path, map_location)
    if meta.get("format") != _FORMAT_TAG:
        ours = "layers" in meta or (tensors and all(k.startswith(("sparse.", "dense."))
                                                     for k in tensors))
        if ours:  # save_sparse's layout under another tag: not a plain state_dict
            raise ValueError(f"{path} is not a file written by sparsekern.save_sparse (its "
                             f"metadata has format={meta.get('format')!r}, expected "
                             f"{_FORMAT_TAG!r})")
        return _state_dict_saved(path, tensors)  # a plain state_dict (save_pretrained, ...)
    if "layers" not in meta:
        raise ValueError(f"{path}: the metadata 'layers' is missing; expected a JSON object "
                         f"{{layer name: entry}}, as save_sparse writes it")
    try:
        described = json.loads(meta["layers"])
    except ValueError:
        raise ValueError(f"{path}: the metadata 'layers' is not valid JSON") from None
    if not isinstance(described, dict) or not all(isinstance(v, dict) for v in described.values()):
        raise ValueError(f"{path}: the metadata 'layers' must be a JSON object of objects")
    aliases = _resolve_aliases(path, meta, tensors)
    layers: Dict[str, dict] = {}
    for name, d in described.items():
        e = {k: v for k, v in d.items() if k != "bias"}
        for k in _FMT_TENSORS + (("bias",) if d.get("bias") else ()):
            key = f"sparse.{name}.{k}"
            if key not in tensors:
                raise ValueError(f"{path}: layer {name!r} has no tensor {key!r}")
            e[k] = tensors.pop(key)
        e.setdefault("bias", None)
        layers[name] = e
    dense = {k[len("dense."):]: tensors.pop(k) for k in list(tensors) if k.startswith("dense.")}
    if tensors:
        raise ValueError(f"{path}: unexpected tensors {sorted(tensors)} (not part of a layer "
                         f"named in the metadata, nor of the dense state)")
    return _Saved(layers, dense, aliases=aliases)


# -- check and build -----------------------------------------------------------------------

def _existing(model: nn.Module, name: str, ok, what: str, expected: str) -> nn.Module:
    try:
        old = model.get_submodule(name)
    except AttributeError:
        raise ValueError(f"the saved sparse layer {name!r} does not exist in "
                         f"{type(model).__name__}") from None
    if not ok(old):
        has = type(old).__name__
        q = _layers.quantized_name(old)
        if has == what:  # a torch.ao quantized Linear is a "Linear" too: qualified names
            has = f"{type(old).__module__}.{type(old).__qualname__}"
            what = f"torch.nn.{what}"
        qnote = (f" (a {q}, quantized by torch.ao.quantization: sparsekern does not support "
                 f"quantized layers)" if q else "")
        raise ValueError(f"the saved sparse layer {name!r} is a {what}, but the model has a "
                         f"{has} there{qnote}; expected {expected} (the model the layer was "
                         f"saved from)")
    return old


def _field(name: str, e: dict, key: str, check, expected: str):
    if key not in e:
        raise ValueError(f"layer {name!r}: the saved entry has no {key!r}")
    v = e[key]
    if not check(v):
        raise ValueError(f"layer {name!r}: saved {key} is {v!r}; expected {expected}")
    return v


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _ints(n: int):
    return lambda v: isinstance(v, (list, tuple)) and len(v) == n and all(map(_is_int, v))


def _format(name: str, e: dict, shape) -> Tuple[object, object]:
    """(validated format, bias) of a saved entry; errors name the layer."""
    layout = _field(name, e, "layout", lambda v: isinstance(v, str), "a layout name")
    for k in _FMT_TENSORS:
        _field(name, e, k, lambda v: isinstance(v, torch.Tensor), "a tensor")
    try:
        fmt = from_parts(layout, e["values"], e["indices"], e["offsets"], shape, validate=True)
    except (ValueError, TypeError, RuntimeError) as err:
        raise ValueError(f"layer {name!r}: {err}") from None
    bias = e.get("bias")
    if bias is not None:
        if not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (shape[0],):
            got = list(bias.shape) if isinstance(bias, torch.Tensor) else type(bias).__name__
            raise ValueError(f"layer {name!r}: saved bias is {got}; expected a tensor of shape "
                             f"[{shape[0]}]")
        if bias.dtype != fmt.values.dtype or bias.device != fmt.values.device:
            raise ValueError(f"layer {name!r}: saved bias has dtype {bias.dtype} on "
                             f"{bias.device}; expected the values' dtype {fmt.values.dtype} on "
                             f"{fmt.values.device}")
    return fmt, bias


def _build_linear(model: nn.Module, name: str, e: dict) -> nn.Module:
    old = _existing(model, name, lambda m: _layers.is_linear(m) or isinstance(m, SparseLinear),
                    "Linear", "an nn.Linear, a transformers Conv1D or a SparseLinear")
    shape = _field(name, e, "shape", lambda v: _ints(2)(v) and min(v) >= 0,
                   "[out_features, in_features] (ints >= 0)")
    have = ([old.out_features, old.in_features] if isinstance(old, SparseLinear)
            else list(_layers.dims(old)))
    if list(shape) != have:
        raise ValueError(f"layer {name!r}: saved shape {list(shape)} but the model has {have}")
    fmt, bias = _format(name, e, shape)
    return _like(SparseLinear(fmt, bias), old)


def _build_conv(model: nn.Module, name: str, e: dict) -> nn.Module:
    old = _existing(model, name, lambda m: isinstance(m, (nn.Conv2d, SparseConv2d)), "Conv2d",
                    "an nn.Conv2d or a SparseConv2d")
    g = {k: _field(name, e, k, lambda v: True, "") for k in _CONV_FIELDS if k != "groups"}
    g["groups"] = e.get("groups", 1)
    try:
        check_geometry(g["kernel_size"], g["stride"], g["padding"], g["dilation"],
                       g["padding_mode"], g["groups"])
        for k in ("out_channels", "in_channels"):
            if not _is_int(g[k]) or g[k] < 1:
                raise ValueError(f"{k} must be an int >= 1, got {g[k]!r}")
    except (ValueError, TypeError) as err:
        raise ValueError(f"layer {name!r}: saved Conv2d: {err}") from None
    saved = [g["out_channels"], g["in_channels"], *g["kernel_size"]]
    have = [old.out_channels, old.in_channels, *old.kernel_size]
    if saved != have:
        raise ValueError(f"layer {name!r}: saved Conv2d [out, in, kh, kw] = {saved} but the "
                         f"model has {have}")
    pad = list(old.padding) if not isinstance(old.padding, str) else old.padding
    pads = list(g["padding"]) if not isinstance(g["padding"], str) else g["padding"]
    saved_geo = [list(g["stride"]), pads, list(g["dilation"]), g["padding_mode"], g["groups"]]
    have_geo = [list(old.stride), pad, list(old.dilation), old.padding_mode,
                getattr(old, "groups", 1)]
    if saved_geo != have_geo:
        raise ValueError(f"layer {name!r}: saved Conv2d [stride, padding, dilation, "
                         f"padding_mode, groups] = {saved_geo} but the model has {have_geo}")
    kh, kw = g["kernel_size"]
    fmt, bias = _format(name, e, (g["out_channels"], g["in_channels"] * kh * kw))
    return _like(SparseConv2d(fmt, g["in_channels"], g["kernel_size"], g["stride"],
                              g["padding"], g["dilation"], bias, g["padding_mode"]), old)


def _like(new: nn.Module, old: nn.Module) -> nn.Module:
    """``new`` (a packed layer) in the dtype and on the device of the layer it replaces, as
    load_state_dict puts the dense state in the model's own dtype and device (a bf16 file
    loads into a float32 model as float32; the index tensors keep their integer dtypes),
    and as frozen or trainable as that layer."""
    w = old.values if isinstance(old, (SparseLinear, SparseConv2d)) else old.weight
    new = new.to(device=w.device, dtype=w.dtype) if w.is_floating_point() else new
    return new.trainable_like(old)


def _same_kind(a: torch.dtype, b: torch.dtype) -> bool:
    def k(d):
        return "bool" if d == torch.bool else "complex" if d.is_complex else \
            "float" if d.is_floating_point else "int"
    return k(a) == k(b)


def _hf_key_renamer(model: nn.Module, path: PathLike):
    """For a transformers model: a function taking a key of a save_pretrained checkpoint to
    the model's own name, as from_pretrained renames it (transformers 5 writes some keys under
    their legacy names, e.g. GPT-NeoX's lm_head as embed_out), or None when the model needs
    no renaming. Renamings only: a key that transformers would convert (fuse, split) raises
    ValueError, since a sparse layer's tensors cannot be converted that way."""
    if "transformers" not in sys.modules:  # never imported: the model is none of its
        return None
    try:
        from transformers import PreTrainedModel
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key
    except ImportError:  # a transformers without conversion mappings (4.x): names are kept
        return None
    if not isinstance(model, PreTrainedModel):
        return None
    conversions = get_model_conversion_mapping(model)
    renamings = [c for c in conversions if isinstance(c, WeightRenaming)]
    converters = [c for c in conversions if isinstance(c, WeightConverter)]
    if not renamings and not converters:
        return None

    def rename(key: str) -> str:
        # no base_model_prefix here: _base_model_mapped adds or strips it for the whole
        # checkpoint at once (only when every key maps), not key by key
        new, converted = rename_source_key(key, renamings, converters, None, None)
        if converted is not None:
            raise ValueError(f"{path}: transformers converts {key!r} on loading "
                             f"{type(model).__name__} (not only a renaming), which sparsekern "
                             f"cannot apply to a sparse layer; save the model with "
                             f"sk.save_sparse instead")
        return new
    return rename


def _renamed(saved: _Saved, model: nn.Module, path: PathLike) -> _Saved:
    """A plain state_dict checkpoint with its keys under the model's own names (see
    _hf_key_renamer); keys the model already has are kept as they are."""
    rename = _hf_key_renamer(model, path)
    if rename is None:
        return saved
    own = set(model.state_dict()) | {n for n, _ in model.named_modules()}

    def name(key: str) -> str:
        return key if key in own else rename(key)
    layers = {}
    for layer, e in saved.layers.items():
        new = name(layer + ".values")
        layers[new[:-len(".values")] if new.endswith(".values") else layer] = e
    dense = {name(k): v for k, v in saved.dense.items()}
    return _Saved(layers, dense, saved.tied_may_be_missing)


def _base_model_mapped(saved: _Saved, model: nn.Module, path: PathLike) -> Tuple[_Saved, str]:
    """A checkpoint of a transformers task model loaded into its base model, or the reverse,
    under the model's own names; and a note for the error of a state that still does not
    match ("" when nothing was mapped).

    A task model (BertForSequenceClassification) holds its base model under
    ``model.base_model_prefix`` ("bert"), so its keys are ``bert.<key>`` plus its head's
    (``classifier.weight``); the base model (BertModel, same prefix attribute) has the bare
    keys. As transformers' from_pretrained does:

    * task checkpoint -> base model: the prefix is stripped; the keys outside it (the task
      head, packed or dense) are not used, and are logged as a warning (logger "sparsekern").
    * base checkpoint -> task model: the prefix is added; the head's tensors are not in the
      file, so they are missing as any other missing tensor is (ValueError; tied ones, like
      GPT-2's lm_head sharing the token embedding, take the tensor they share).

    Only when the mapping is unambiguous: the model has no key under the prefix and the file
    has some (strip), or the reverse (add); every mapped sparse layer names a module of the
    model and every mapped dense key a key of its state; and (strip) no key outside the
    prefix is also a key of the model. Otherwise the checkpoint is returned as it is (and
    fails or loads as before).
    """
    prefix = getattr(model, "base_model_prefix", None)
    names = list(saved.layers) + list(saved.dense)
    if not isinstance(prefix, str) or not prefix or not names or \
            not all(isinstance(n, str) for n in names):
        return saved, ""
    p = prefix + "."
    state = set(model.state_dict())
    modules = {n for n, _ in model.named_modules()}
    model_has_prefix = any(k.startswith(p) for k in state)
    file_has_prefix = any(n.startswith(p) for n in names)

    def known(layers: Dict[str, object], dense: Dict[str, object]) -> bool:
        return all(n in modules for n in layers) and all(k in state for k in dense)

    if not model_has_prefix and file_has_prefix:  # task checkpoint -> base model
        layers = {n[len(p):]: e for n, e in saved.layers.items() if n.startswith(p)}
        dense = {k[len(p):]: v for k, v in saved.dense.items() if k.startswith(p)}
        head = [n for n in names if not n.startswith(p)]
        if not known(layers, dense) or any(n in modules or n in state for n in head):
            return saved, ""
        if head:
            log.warning("load_sparse: %s holds a task model (keys under %r); loading its base "
                        "model into %s, not using %s", path, p, type(model).__name__, head)
        aliases = {k[len(p):]: t[len(p):] if t.startswith(p) else t
                   for k, t in saved.aliases.items() if k.startswith(p)}
        return _Saved(layers, dense, saved.tied_may_be_missing, aliases), ""
    if model_has_prefix and not file_has_prefix:  # base checkpoint -> task model
        layers = {p + n: e for n, e in saved.layers.items()}
        dense = {p + k: v for k, v in saved.dense.items()}
        if not known(layers, dense):
            return saved, ""
        note = (f"; {path} holds a base model (keys without the {p!r} of "
                f"{type(model).__name__}, added on loading), which has no task head: load it "
                f"into the base model, load_sparse(model.{prefix}, path), to keep the head as "
                f"it is")
        aliases = {p + k: p + t for k, t in saved.aliases.items()}
        return _Saved(layers, dense, tied_may_be_missing=True, aliases=aliases), note
    return saved, ""


def _fill_tied(own: Dict[str, object], dense: Dict[str, object]) -> None:
    """Adds to ``dense`` each key of ``own`` it lacks whose tensor is the same view as that
    of a key it holds (a tied weight, stored once)."""
    view = _view
    held = {view(v): k for k, v in own.items()
            if k in dense and isinstance(v, torch.Tensor) and v.numel()}
    for k, v in own.items():
        if k not in dense and isinstance(v, torch.Tensor) and v.numel() and view(v) in held:
            dense[k] = dense[held[view(v)]]


def _check_dense(model: nn.Module, names: List[str], dense: Dict[str, object],
                 tied_may_be_missing: bool = False, note: str = "") -> None:
    """The dense state must match the model's state outside the sparse layers exactly
    (tied tensors may be missing when ``tied_may_be_missing``: they are filled in);
    ``note`` ends the message of a mismatch."""
    prefixes = tuple(n + "." for n in names)
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(prefixes)}
    if tied_may_be_missing:
        _fill_tied(own, dense)
    missing = [k for k in own if k not in dense]
    unexpected = [k for k in dense if k not in own]
    if missing or unexpected:
        raise ValueError(f"state does not match the model: missing {missing}, "
                         f"unexpected {unexpected}{note}")
    for k, v in dense.items():
        mine = own[k]
        if isinstance(mine, torch.Tensor) != isinstance(v, torch.Tensor):
            raise ValueError(f"state {k!r}: saved a {type(v).__name__}, the model has a "
                             f"{type(mine).__name__}")
        if isinstance(v, torch.Tensor):
            if v.shape != mine.shape:
                raise ValueError(f"state {k!r}: saved shape {list(v.shape)} but the model has "
                                 f"{list(mine.shape)}")
            if not _same_kind(v.dtype, mine.dtype):
                raise ValueError(f"state {k!r}: saved dtype {v.dtype} but the model has "
                                 f"{mine.dtype}")


def _devices() -> List[str]:
    """The device types this process can load tensors onto: 'cpu' and each accelerator whose
    torch module says it is available."""
    return ["cpu"] + [t for t in ("cuda", "xpu", "mps")
                      if getattr(getattr(torch, t, None), "is_available", lambda: False)()]


def _check_device(value, arg: str) -> None:
    """ValueError naming ``arg`` unless ``value`` (a str or torch.device) is a device this
    process has: the tensors read there are checked (their values read) before they move to
    the model's own device, so 'meta' (no data) and an absent CUDA cannot serve."""
    expected = f"expected None or a device this process has ({', '.join(map(repr, _devices()))})"
    try:
        dev = torch.device(value)
    except RuntimeError as e:
        raise ValueError(f"{arg}={value!r} is not a device ({e}); {expected}") from None
    if dev.type == "cpu":
        return
    if dev.type == "meta":
        raise ValueError(f"{arg}={value!r}: the meta device holds no data, so the file's "
                         f"tensors could not be checked nor loaded; {expected}")
    mod = getattr(torch, dev.type, None)
    if not getattr(mod, "is_available", lambda: False)():
        raise ValueError(f"{arg}={value!r} but this process has no {dev.type} device "
                         f"(torch.{dev.type}.is_available() is False); {expected}")
    count = getattr(mod, "device_count", None)
    if dev.index is not None and count is not None and dev.index >= count():
        raise ValueError(f"{arg}={value!r} but this process has {count()} {dev.type} "
                         f"device(s); {expected}")


def _check_map_location(map_location) -> None:
    """Errors naming map_location before the file is read (else a bad one was reported as
    an unreadable file or a bad layer). torch.load's forms: None, a device (str or
    torch.device), a dict {saved location: new location str} or a function (a .pt file only;
    not checked here: it runs per tensor)."""
    if map_location is None or callable(map_location):
        return
    if isinstance(map_location, dict):
        for key, target in map_location.items():
            if not isinstance(target, str):
                raise TypeError(f"map_location[{key!r}] must be a device name (str), as "
                                f"torch.load takes, got {type(target).__name__}")
            _check_device(target, f"map_location[{key!r}]")
        return
    if not isinstance(map_location, (str, torch.device)):
        raise TypeError(f"map_location must be None, a str or torch.device, a dict or a "
                        f"function (as torch.load takes), got {type(map_location).__name__}")
    _check_device(map_location, "map_location")


def _check_not_meta(model: nn.Module) -> None:
    """load_sparse copies into the model's tensors, as load_state_dict does: a model built on
    the meta device (``with torch.device("meta")``) has no storage to copy into (its dense
    tensors stayed meta, and the packed layers failed their checks with 'Tensor.item() cannot
    be called on meta tensors'). Name the first meta tensor instead."""
    for kind, named in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, t in named:
            if t.is_meta:
                raise ValueError(f"model {type(model).__name__} has its {kind} {name!r} on the "
                                 f"meta device; load_sparse copies into the model's tensors, as "
                                 f"load_state_dict does: build the model on a real device (e.g. "
                                 f"'cpu') before loading")


@outside_inference_mode
def load_sparse(model: nn.Module, path: PathLike, map_location=None) -> nn.Module:
    """Load a file from :func:`save_sparse` (``.safetensors`` or ``.pt``) into a fresh model.

    ``path`` may also hold a sparsified model's plain state_dict: a safetensors or
    ``torch.save`` file, or a folder written by Hugging Face's ``save_pretrained``
    (``model.safetensors``, ``pytorch_model.bin`` or their shards; tied weights it leaves out
    are filled from the tensor they share). A state_dict with no packed layer (every layer
    left dense) loads as the dense state, as strictly as load_state_dict.

    Under torch.inference_mode it builds the sparse layers with inference mode off (as
    ``load_state_dict`` copies into existing parameters), so the model can still be trained.

    Each saved sparse layer replaces the nn.Linear / transformers Conv1D / nn.Conv2d of the
    same name (whose shape and geometry must match) and takes that layer's dtype and
    device, as the rest of the state does (loaded strictly, with load_state_dict).
    Everything is checked, and every new layer built, before the model changes: a bad file
    raises ValueError naming the layer and the problem, and leaves ``model`` as it was.

    ``map_location`` (as torch.load takes it; a .safetensors file takes None, a str or a
    torch.device) only says where the file is read before each tensor moves to the model's
    device: it must name a device this process has (not 'meta'), checked before the file
    is read.

    A transformers task model's checkpoint (BertForSequenceClassification: keys under its
    ``base_model_prefix``, ``bert.``) loads into the base model (BertModel), its head's
    tensors unused (logged as a warning); a base model's checkpoint loads into a task model
    whose head is tied to base tensors (GPT2LMHeadModel), and into any other task model
    raises the ValueError of the head's missing tensors (load it into
    ``model.base_model`` instead). The prefix is stripped or added only when every key then
    names one of the model's (see _base_model_mapped).

    A ``torch.compile`` wrapper loads into the model it wraps and is returned; save_sparse of
    one writes the plain model's layer names.
    """
    _check_args("load_sparse", model, path, "a .safetensors or .pt file, or a folder")
    _check_map_location(map_location)
    wrapper, model = model, _layers.compiled_inner(model) or model  # load into what it wraps
    _check_not_meta(model)
    saved = _read(path, map_location)
    if saved.tied_may_be_missing:  # a plain state_dict, maybe under transformers' file names
        saved = _renamed(saved, model, path)
    saved, note = _base_model_mapped(saved, model, path)
    new: Dict[str, nn.Module] = {}
    for name, e in saved.layers.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"{path}: a sparse layer has the name {name!r}; expected the dotted "
                             f"name of a submodule")
        build = _build_conv if e.get("kind") == "conv2d" else _build_linear
        if e.get("kind") not in ("linear", "conv2d"):
            raise ValueError(f"layer {name!r}: saved kind {e.get('kind')!r}; expected 'linear' "
                             f"or 'conv2d'")
        new[name] = build(model, name, e)
    _check_dense(model, list(new), saved.dense, saved.tied_may_be_missing, note)
    _check_aliases(model, path, saved.aliases)
    old = {name: model.get_submodule(name) for name in new}
    for name, mod in new.items():
        _set_submodule(model, name, mod)
    try:
        model.load_state_dict(saved.dense, strict=False)
    except Exception:
        for name, mod in old.items():  # checked above; if torch still refuses, undo the swap
            _set_submodule(model, name, mod)
        raise
    return wrapper
