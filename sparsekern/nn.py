"""Sparse layers and the model-level swap ``sparsify``."""
from __future__ import annotations

import contextlib
import logging
import math
import numbers
import re
import warnings
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

import torch
from torch import nn

from . import _layers, functional
from ._packed_module import (PackedWeightModule, check_bias, decode_extra_state, encode_extra_state,
                             outside_inference_mode)
from .conv import SparseConv2d
from .formats import SparseFormat, from_parts, layouts, to_sparse
from .ops import dense_path_needed

log = logging.getLogger("sparsekern")

#: The op (defined when sparsekern.ops is imported, through .functional above).
_SPMM = torch.ops.sparsekern.spmm

#: Largest stored fraction at which ``sparsify`` packs a layer by default, per layout (from
#: the registry; a layout without one, like 2:4, is packed whenever the weight fits it).
DEFAULT_MAX_DENSITY = {lay.name: lay.default_max_density for lay in layouts.all_layouts()
                       if lay.default_max_density is not None}

#: What serves ``layout="auto"``: sparsekern.auto, which sits above this module (it times
#: layers, so it needs them) and is therefore never imported here. The package's
#: ``__init__`` registers it with :func:`register_auto` (lazily: nothing of auto is loaded
#: before the first ``layout="auto"`` call).
_auto_provider = None


def register_auto(provider) -> None:
    """Install what serves ``layout="auto"``: an object with ``decide_matrix(W, blocksize)``
    (returning a decision with ``.layout`` and ``.reason``), ``sparsify_auto(model, table,
    example_input, layers=..., margin=...)`` and ``DEFAULT_MARGIN``."""
    global _auto_provider
    _auto_provider = provider


def _auto():
    if _auto_provider is None:
        raise RuntimeError("layout='auto' is served by sparsekern.auto, which is not registered; "
                           "import sparsekern (the package registers it) or call "
                           "sparsekern.nn.register_auto")
    return _auto_provider


class SparseLinear(PackedWeightModule):
    """``y = x @ W.T + bias`` with W [out_features, in_features] held in a sparse format.

    Parameters / buffers (all in ``state_dict``, loadable with ``weights_only=True``):
        values:  nn.Parameter, the format's values (trainable on the fixed pattern).
        indices, offsets: buffers, the format's index tensors.
        bias:    nn.Parameter [out_features] or None.
    The layout and shape travel as the module's extra state (plain ints and strings).
    """

    def __init__(self, weight: SparseFormat, bias: Optional[torch.Tensor] = None):
        super().__init__()
        if not isinstance(weight, SparseFormat):
            raise TypeError(f"weight must be a packed sparse matrix (sparsekern.to_sparse), got "
                            f"{type(weight).__name__}")
        self.layout = weight.layout
        self.out_features, self.in_features = weight.shape
        self.values = nn.Parameter(weight.values, requires_grad=weight.values.is_floating_point())
        self.register_buffer("indices", weight.indices)
        self.register_buffer("offsets", weight.offsets)
        if bias is not None:
            check_bias(bias, self.out_features, weight.values)
            self.bias = nn.Parameter(bias.detach().clone())
        else:
            self.register_parameter("bias", None)

    @classmethod
    @outside_inference_mode
    def from_dense(cls, linear: nn.Module, layout: str = "2:4", blocksize=None) -> "SparseLinear":
        """Pack an nn.Linear (weight [out, in]) or a transformers Conv1D (weight [in, out],
        packed as its transpose) whose weight is already pruned to ``layout``'s pattern."""
        if not _layers.is_linear(linear):
            raise TypeError(f"linear must be an nn.Linear or a transformers Conv1D, got "
                            f"{type(linear).__name__}")
        W = _layers.weight_matrix(linear).detach()
        fmt = to_sparse(W, layout=layout, blocksize=blocksize)
        bias = None if linear.bias is None else linear.bias.detach()
        return cls(fmt, bias).trainable_like(linear)

    @property
    def weight(self) -> SparseFormat:
        """The packed weight as a format object sharing this module's tensors."""
        return from_parts(self.layout, self.values, self.indices, self.offsets,
                          (self.out_features, self.in_features), validate=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        K = self.in_features
        # Tensors straight from the module's dicts: nn.Module.__getattr__ costs ~0.5 us
        # each, a fifth of a small layer's call.
        params, buffers = self._parameters, self._buffers
        if (not isinstance(x, torch.Tensor) or x.is_nested or x.layout != torch.strided
                or x.dim() < 1 or x.shape[-1] != K
                or x.dtype != params["values"].dtype or x.device != params["values"].device
                or dense_path_needed(x, params["values"], params["bias"])):
            # the named error, a dtype the op takes (mixed precision, autocast), or
            # forward-mode AD or a functorch transform (the dense path: ops.dense_path_needed)
            return functional.linear(x, self.weight, self.bias)
        # The op directly (no format object per call): x rows are B's columns, as in linear.
        if x.dim() == 2 and not torch.jit.is_tracing():  # no reshapes (y [M, N] column-major)
            return _SPMM(params["values"], buffers["indices"], buffers["offsets"],
                         self.out_features, K, self.layout, x.t(), params["bias"]).t()
        # Any rank; a jit trace records reshape(-1, K), so it runs at another rank too.
        y = _SPMM(params["values"], buffers["indices"], buffers["offsets"], self.out_features,
                  K, self.layout, x.reshape(-1, K).t(), params["bias"])
        return y.t().reshape(x.shape[:-1] + (self.out_features,))

    def to_dense(self) -> nn.Linear:
        """An equivalent dense nn.Linear."""
        lin = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                        device=self.values.device, dtype=self.values.dtype)
        with torch.no_grad():
            lin.weight.copy_(self.weight.to_dense())
            if self.bias is not None:
                lin.bias.copy_(self.bias)
        return lin

    def get_extra_state(self) -> torch.Tensor:
        """uint8 [n]: the JSON of {"layout": str, "shape": [out, in]} (a tensor, so that a
        state_dict holds tensors only)."""
        return encode_extra_state({"layout": self.layout,
                                   "shape": [self.out_features, self.in_features]})

    def check_extra_state(self, state) -> Tuple[int, int]:
        """Raise unless ``state`` (from get_extra_state, or its dict) is valid; returns
        (out, in)."""
        state = decode_extra_state(state)
        shape = state.get("shape")
        if (not isinstance(shape, (list, tuple)) or len(shape) != 2 or
                not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                        for s in shape) or "layout" not in state):
            raise ValueError(f"extra state must be {{'layout': str, 'shape': [out, in]}}, got "
                             f"{state!r}")
        return int(shape[0]), int(shape[1])

    def fixed_geometry(self, state) -> Dict[str, object]:
        out, inp = self.check_extra_state(state)
        return {"out_features": out, "in_features": inp}

    def set_extra_state(self, state):
        state = decode_extra_state(state)
        self.check_extra_state(state)
        self.layout = state["layout"]
        self.out_features, self.in_features = (int(s) for s in state["shape"])

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"layout={self.layout!r}, nnz={self.values.numel()}, bias={self.bias is not None}")


def choose_layout(W: torch.Tensor, layout: str, blocksize=None,
                  max_density: Optional[float] = None) -> Tuple[Optional[str], str]:
    """Decide whether W [M, K] is packed, and how. Returns (layout or None, reason).

    ``"auto"``: the format that the latency table (sparsekern.auto; measured once on this
    machine for a Linear [M, K] at batch 1, cached on disk) predicts fastest for W's
    actual zeros — 2:4 when W is 2:4, BSR with ``blocksize`` (default (32, 32)), or CSC —
    and None (dense) when no format is predicted faster than dense.
    """
    if layout == "auto":
        d = _auto().decide_matrix(W, blocksize)
        return d.layout, d.reason
    lay = layouts.get(layout)
    if lay.default_max_density is None:  # a fixed pattern (2:4): pack whenever W fits it
        if lay.pattern_density(W, blocksize) is None:
            return None, f"weight is not {layout} sparse"
        return layout, f"weight is {layout} sparse"
    limit = lay.default_max_density if max_density is None else max_density
    fmt = to_sparse(W, layout=layout, blocksize=blocksize)
    stored = fmt.nnz / max(1, W.numel())
    # limit 1: pack whatever is stored (a BSR of partial edge blocks stores more than M*K)
    if limit >= 1.0 and stored > limit:  # the reason must not read '1.333 <= 1.0'
        return layout, (f"stored fraction {stored:.4g} (above 1: padded edge blocks); "
                        f"max_density={limit} packs whatever is stored")
    if limit >= 1.0 or _within_limit(W, fmt.nnz, limit, lay.blocked):
        return layout, f"stored fraction {stored:.4g} <= {limit}"
    why = "max_density" if max_density is not None else f"{layout}'s default max_density"
    return None, f"stored fraction {stored:.4g} > {limit} ({why})"


def _within_limit(W: torch.Tensor, nnz: int, limit: float, blocked: bool) -> bool:
    """Whether ``nnz`` stored entries of W [M, K] are at most a fraction ``limit`` of it, up
    to rounding to whole entries: over the matrix (a weight pruned to 70% keeps
    ceil(0.3 * numel) entries, 30.002% of 9216), or, for an unblocked layout, in every row
    (a per-row criterion such as Wanda or SparseGPT prunes a row of 1536 to 70% by keeping
    461 entries, 30.01%, in each)."""
    M, K = int(W.shape[0]), int(W.shape[1])
    if nnz <= math.ceil(limit * M * K - 1e-9):
        return True
    if blocked or M == 0:
        return False
    return int((W != 0).sum(1).max()) <= math.ceil(limit * K - 1e-9)


def check_sparsify_args(layout: str, blocksize=None, max_density: Optional[float] = None,
                        example_input=None, latency_table=None, margin=None) -> None:
    """The argument checks of :func:`sparsify` (also run by prune.convert before its masks)."""
    if not isinstance(layout, str):
        raise TypeError(f"layout must be a str ({layouts.choices(('auto',), ' or ')}), got "
                        f"{type(layout).__name__}")
    if layout != "auto" and layout not in layouts.names():
        raise ValueError(f"layout must be {layouts.choices(('auto',), ' or ')}; got {layout!r}")
    if max_density is not None:
        if isinstance(max_density, bool) or not isinstance(max_density, numbers.Real):
            raise TypeError(f"max_density must be a number in [0, 1] (the largest stored "
                            f"fraction to pack), got {type(max_density).__name__} "
                            f"{max_density!r}")
        if not 0.0 <= max_density <= 1.0:
            raise ValueError(f"max_density must be in [0, 1], got {max_density!r}")
    if layout == "auto":
        if blocksize is not None or max_density is not None:
            raise ValueError(f"layout='auto' chooses the format (and block shape) from measured "
                             f"latencies; blocksize={blocksize!r} and max_density={max_density!r} "
                             f"apply only to layout='bsr'/'csc'")
    elif example_input is not None or latency_table is not None or margin is not None:
        raise ValueError(f"example_input, latency_table and margin apply to layout='auto' only; "
                         f"got layout={layout!r}")
    elif blocksize is not None and not layouts.get(layout).blocked:
        blocked = [n for n in layouts.names() if layouts.get(n).blocked]
        raise ValueError(f"blocksize applies to a blocked layout ({', '.join(map(repr, blocked))})"
                         f"; got blocksize={blocksize!r} with layout={layout!r}, which would "
                         f"ignore it")


def blocksize_arg(blocksize):
    """``blocksize`` as given, or (bm, bk) for the "BMxBK" string prune_model's granularity
    takes (e.g. "16x16"), so one spelling works in both."""
    if isinstance(blocksize, str):
        m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", blocksize)
        if m is None:
            raise ValueError(f"blocksize must be two positive integers (bm, bk) or a 'BMxBK' "
                             f"string such as '16x16', got {blocksize!r}")
        return int(m.group(1)), int(m.group(2))
    return blocksize


@outside_inference_mode
def sparsify(model: nn.Module, layout: str = "auto", blocksize=None,
             max_density: Optional[float] = None, *, example_input=None,
             latency_table=None, margin: Optional[float] = None,
             layers: Optional[Iterable[str]] = None) -> nn.Module:
    """Swap every nn.Linear, transformers Conv1D and nn.Conv2d (groups=1) whose weight
    already has ``layout``'s pattern for a SparseLinear / SparseConv2d.

    The packed matrix is the weight as [out, K]: an nn.Linear's weight, a Conv1D's weight
    transposed (it stores [in, out]), a Conv2d's weight read as [out, in*kh*kw].

    Args:
        model: any nn.Module; modified in place and returned.
        layout: a registered layout (``"2:4"``, ``"1:4"``, ``"bsr"``, ``"csc"``, ``"sell"``;
            see ``sparsekern.formats.layouts``) or ``"auto"``: each layer gets the format
            that the latency table predicts fastest for its actual zeros (any registered
            layout, BSR with a measured block shape; sell only for inputs of at most 2
            tokens), and stays dense when no format is predicted at
            least ``margin`` faster than dense at every measured shape (see
            sparsekern.auto). The table is measured on this machine once and cached on
            disk ($SPARSEKERN_CACHE or ~/.cache/sparsekern).
        blocksize: (bm, bk) for ``"bsr"``.
        max_density: pack only when the stored fraction is at most this (default: the
            layout's own, e.g. 0.5 for bsr, 0.3 for csc and sell; none for 2:4 and 1:4).
        example_input: for ``"auto"``: the input(s) to measure at — a tensor, a tuple of
            model arguments, or a list of them (one per shape). Without it, each Linear is
            measured alone on a batch-1 input [1, in_features] (Conv2d layers then stay
            dense: they need a real input shape).
        latency_table: for ``"auto"``: a table from ``sparsekern.auto.build_table`` (layers
            it lacks are measured).
        margin: for ``"auto"``: required predicted gain over dense (default 0.05). With
            ``example_input``, the table's close calls are then checked on the whole model
            (sparsekern.auto.recheck; what was tried: ``model.sparsekern_model_check``).
        layers: names of the layers to consider (default: every linear-like layer). A layer
            packed before is reported "already packed" and kept as it is, as without
            ``layers``; a later name of a module registered under several names
            (``m.b = m.a``) names that module (reported under its first name).
    Every linear-like layer left dense (including ones sparsekern cannot pack: grouped
    convs, nn.Linear subclasses, other convolutions, torch.ao quantized layers when
    ``layers`` is None, and layers whose weight is tied to
    another parameter, such as GPT-2's lm_head and token embedding) is logged at INFO (logger
    "sparsekern") with the reason; the decisions are kept in ``model.sparsekern_report``
    ({module name: (layout or "dense", reason)}; layers packed before: "already packed";
    layers outside ``layers`` keep an earlier call's entry, so calls layer by layer add up),
    which, when ``layers`` is None, also names each weight of 3 or more dims outside a
    linear-like layer (a mixture of experts' [E, out, in] parameter: {parameter name:
    ("dense", "3-D stack of weight matrices (E, out, in) (e.g. experts): not a Linear-like
    layer; not pruned")}; left as it is),
    and for ``"auto"`` also in
    ``model.sparsekern_decisions`` (predicted times per format). A model with no layer
    to pack gets a UserWarning naming the layer types it has.
    Called under torch.inference_mode, it packs with inference mode off, so the sparse
    layers can still be trained afterwards.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"sparsify: model must be an nn.Module, got {type(model).__name__}; call "
                        f"sparsify(model, layout=...)")
    blocksize = blocksize_arg(blocksize)
    check_sparsify_args(layout, blocksize, max_density, example_input, latency_table, margin)
    layers = _resolved_layers(model, _layer_names(layers), layout)
    targets, skipped = _candidates(model, layers)
    # weights of 3+ dims outside any linear-like layer (MoE experts): named, never packed
    left_alone = _layers.weights_left_alone(model) if layers is None else {}
    skipped.update(left_alone)
    nothing_to_pack = not targets and layers is None and not any(
        isinstance(m, PackedWeightModule) for m in model.modules())
    if layout == "auto" and example_input is None and latency_table is None:
        # Conv2d layers are measured at their real input shape, so they need example_input.
        for name in [n for n, m in targets.items() if not _layers.is_linear(m)]:
            targets.pop(name)
            skipped[name] = ("Conv2d layers need example_input (or latency_table) to be "
                             "timed for layout='auto'")
    for name, why in skipped.items():
        log.info("sparsify: %s stays dense (%s)", name or type(model).__name__, why)
    if nothing_to_pack:
        msg = (f"sparsify: {type(model).__name__} has no layer that sparsekern can pack "
               f"({_layers.SUPPORTED_NAMES}); its layers are: {_layers.layer_types(model)}" +
               "".join(f"; {n} left alone: {why}" for n, why in left_alone.items()))
        # the warning is what a user sees; the log keeps it at INFO (a WARNING record would be
        # printed a second time by logging's last-resort handler when logging is not set up)
        log.info(msg)
        warnings.warn(msg, stacklevel=3)  # past outside_inference_mode's wrapper
    earlier = dict(getattr(model, "sparsekern_report", None) or {})  # an earlier call's
    if layout == "auto" and targets:
        auto = _auto()
        result = auto.sparsify_auto(model, latency_table, example_input, layers=list(targets),
                                    margin=auto.DEFAULT_MARGIN if margin is None else margin)
    else:
        result = _swap(model, targets, layout, blocksize, max_density)
        if layout == "auto":
            result.sparsekern_decisions = {}
    for name, why in skipped.items():
        result.sparsekern_report[name] = ("dense", why)
    names = None if layers is None else set(layers)
    report = result.sparsekern_report
    for name, m in result.named_modules():  # packed before this call: reported, kept as is
        if isinstance(m, PackedWeightModule) and name not in report:
            # outside this call's layers=: the earlier call's decision, which still holds
            kept = None if names is None or name in names else earlier.get(name)
            report[name] = kept if kept is not None else (m.layout, "already packed")
    if names is not None:  # layers this call left out keep an earlier call's decision
        present = dict(result.named_modules())
        report.update({n: e for n, e in earlier.items()
                       if n not in names and n not in report and n in present})
    return result


def _layer_names(layers) -> Optional[List[str]]:
    """``layers`` as a list of names (a str is one name; an iterator is read once); None
    stays None (every layer). ValueError when it names none: packing nothing is never the
    intent (prune_model refuses an empty ``layers`` the same way)."""
    if layers is None:
        return None
    names = [layers] if isinstance(layers, str) else list(layers)
    if not names:
        raise ValueError(f"layers is empty: name at least one {_layers.SUPPORTED_NAMES} to "
                         f"sparsify, or pass layers=None for every one")
    return names


def _resolved_layers(model: nn.Module, layers: Optional[List[str]],
                     layout: str) -> Optional[List[str]]:
    """``layers`` with each later name of a module registered under several names
    (``m.b = m.a``) replaced by its first name, the one named_modules() and the report use
    (logged at INFO), each module once. A named layer packed in another layout than
    ``layout`` is kept as it is, as without ``layers`` (logged at INFO)."""
    if layers is None:
        return None
    aliases = _layers.canonical_names(model, layers)
    for alias, first in aliases.items():
        log.info("sparsify: %r is another name for %r (one module registered under both "
                 "names); treated as %r", alias, first, first)
    layers = list(dict.fromkeys(aliases.get(n, n) for n in layers))
    modules = dict(model.named_modules())
    for n in layers:
        m = modules.get(n)
        if isinstance(m, PackedWeightModule) and layout not in ("auto", m.layout):
            log.info("sparsify: %s stays %s (already packed; layout=%r applies to dense "
                     "layers: unpack it with layer.to_dense() to repack it)", n or
                     type(model).__name__, m.layout, layout)
    return layers


def _candidates(model: nn.Module, layers) -> Tuple[Dict[str, nn.Module], Dict[str, str]]:
    """({name: packable layer}, {name: why a linear-like layer is left alone})."""
    if layers is None:
        named = [(n, m) for n, m in model.named_modules() if _layers.looks_linear(m)]
    else:
        modules = dict(model.named_modules())
        # a named layer packed before: reported "already packed" by sparsify, as without
        # layers=
        names = [n for n in layers if not isinstance(modules.get(n), PackedWeightModule)]
        for n in names:
            if n not in modules or not _layers.looks_linear(modules[n]):
                q = None if n not in modules else _layers.quantized_name(modules[n])
                got = ("does not exist" if n not in modules else
                       f"is a {q} ({_layers.QUANTIZED_NOTE})" if q is not None else
                       f"is a {type(modules[n]).__name__}")
                raise ValueError(f"layers: {n!r} {got} in {type(model).__name__}; expected the "
                                 f"name of an {_layers.SUPPORTED_NAMES}")
        named = [(n, modules[n]) for n in names]
    targets, skipped = {}, {}
    if layers is None:  # torch.ao quantized layers: named in the report, never packed
        skipped.update({n: f"{_layers.quantized_name(m)} is {_layers.QUANTIZED_NOTE}"
                        for n, m in model.named_modules() if _layers.quantized_name(m)})
    tied = _layers.tied_weights(model)
    aliases = _layers.module_aliases(model)
    for name, mod in named:
        why = _layers.skip_reason(mod)
        if why is None and _layers.empty_weight(mod):
            why = f"{_layers.empty_weight(mod)}: nothing to pack"
        if why is None and id(mod) in aliases:
            why = (f"one module registered under several names "
                   f"({', '.join(map(repr, aliases[id(mod)]))}); sparsify does not pack a "
                   f"shared module yet (its pruned zeros stay in the dense weight)")
        others = [n for n in tied.get(id(getattr(mod, "weight", None)), ())
                  if n != (f"{name}.weight" if name else "weight")]
        if why is None and others:
            why = (f"its weight is tied to {', '.join(map(repr, others))} (one shared "
                   f"Parameter); a packed copy would untie them (training would update two "
                   f"copies). Untie it first (a cloned weight) to pack it")
        if why is None:
            _check_not_meta(name, mod)
            targets[name] = mod
        else:
            skipped[name] = why
    return targets, skipped


def _check_not_meta(name: str, mod: nn.Module) -> None:
    """ValueError naming the layer when its weight is on the meta device (a model built under
    ``torch.device("meta")`` before its weights are loaded): there is nothing to pack."""
    w = getattr(mod, "weight", None)
    if isinstance(w, torch.Tensor) and w.is_meta:
        raise ValueError(f"sparsify: layer {name!r} has its weight on the meta device (no values "
                         f"to pack); load the weights first, or load a saved sparse model with "
                         f"sparsekern.load_sparse")


def _swap(model: nn.Module, targets: Dict[str, nn.Module], layout: str, blocksize,
          max_density: Optional[float]) -> nn.Module:
    """Pack each target whose weight matrix has ``layout``'s pattern (fixed layouts)."""
    report: Dict[str, Tuple[str, str]] = {}
    result = model
    for name, mod in targets.items():
        chosen, why = choose_layout(_layers.weight_matrix(mod).detach(), layout, blocksize,
                                    max_density)
        report[name] = (chosen or "dense", why)
        if chosen is None:
            log.info("sparsify: %s stays dense (%s)", name or type(mod).__name__, why)
            continue
        cls = SparseConv2d if _layers.kind(mod) == "conv2d" else SparseLinear
        blocked = layouts.get(chosen).blocked
        new = cls.from_dense(mod, layout=chosen, blocksize=blocksize if blocked else None)
        result = replace_layer(model, name, new)
    if targets and all(c == "dense" for c, _ in report.values()):
        # an explicit layout that fits no layer is a mistake worth more than an INFO line
        first, (_, why) = next(iter(report.items()))
        msg = (f"sparsify: layout={layout!r} packed none of the {len(report)} layers: "
               f"{first or type(model).__name__}: {why}" +
               (f" (and {len(report) - 1} more)" if len(report) > 1 else "") +
               f"; prune to the {layout!r} pattern first (sparsekern.prune), "
               + ("" if layouts.get(layout).default_max_density is None else
                  "pass a higher max_density= to pack it anyway, ")
               + "or use layout='auto'")
        log.info(msg)  # printed once: as the warning (see nothing_to_pack above)
        warnings.warn(msg, stacklevel=4)  # the caller of sparsify
    result.sparsekern_report = report
    return result


def replace_layer(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Put the packed layer ``new`` where the layer ``name`` is (:func:`_set_submodule`) and
    return the model; when ``name`` is "" (the model is itself the layer) ``new`` takes over
    its hooks and is returned instead."""
    if name == "":
        take_over_hooks(model, new)
        return new
    _set_submodule(model, name, new)
    return model


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` in place of the submodule ``name``; it takes over that module's train/eval
    flag (a model in eval mode stays in eval mode) and its hooks (:func:`take_over_hooks`)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, child, None)
    if isinstance(old, nn.Module):
        new.train(old.training)
        take_over_hooks(old, new)
    setattr(parent, child, new)


# The forward and backward hook dicts of nn.Module (those this torch version has).
_HOOK_DICTS = ("_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks",
               "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
               "_backward_pre_hooks", "_backward_hooks")


def _recomputes_weight(hook) -> bool:
    """Whether a forward pre-hook recomputes the layer's weight from other parameters
    (torch.nn.utils.prune, weight_norm, spectral_norm): the packed layer holds the weight it
    computed and has none of those parameters, so such a hook stays behind."""
    import importlib
    from torch.nn.utils import prune as torch_prune
    utils = "torch.nn.utils."  # modules named like the functions the package exports
    kinds = (torch_prune.BasePruningMethod,
             importlib.import_module(utils + "weight_norm").WeightNorm,
             importlib.import_module(utils + "spectral_norm").SpectralNorm)
    return isinstance(hook, kinds)


@contextlib.contextmanager
def hooks_detached(modules: Iterable[nn.Module]) -> Iterator[None]:
    """Inside, ``modules`` run none of their own forward and backward hooks (a timing of
    module swaps must neither run the user's hooks nor time them for one side only); each
    module's hook dicts come back on exit. Modules sharing dicts (a packed layer and the layer
    it replaced, see :func:`take_over_hooks`) are all detached."""
    saved = []
    for m in dict.fromkeys(modules):  # each module once, in order
        for attr in _HOOK_DICTS:
            if hasattr(m, attr):
                d = getattr(m, attr)
                saved.append((m, attr, d))
                setattr(m, attr, type(d)())
    try:
        yield
    finally:
        for m, attr, d in reversed(saved):
            setattr(m, attr, d)


def take_over_hooks(old: nn.Module, new: nn.Module) -> None:
    """``new`` (the packed layer) runs the forward and backward hooks registered on ``old``
    (the layer it replaces), as torch.ao.quantization's module swap does: a forward hook that
    records activations still records them. ``new`` shares ``old``'s hook dicts, so the handles
    the user holds still remove them. Weight-recomputing pre-hooks stay behind
    (:func:`_recomputes_weight`; then the pre-hooks are copied, not shared). State-dict hooks
    are not taken over: they were written for ``old``'s tensors."""
    for attr in _HOOK_DICTS:
        if hasattr(old, attr) and hasattr(new, attr):
            setattr(new, attr, getattr(old, attr))
    pre = old._forward_pre_hooks
    kept = type(pre)((k, h) for k, h in pre.items() if not _recomputes_weight(h))
    if len(kept) != len(pre):
        new._forward_pre_hooks = kept
    new._is_full_backward_hook = old._is_full_backward_hook
