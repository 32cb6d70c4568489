"""Channel pruning: remove whole output channels of Conv2d/Linear layers and every input they feed.

The model is traced with ``torch.fx`` (shapes from one example input). From each prunable
layer (the *producer*: an nn.Conv2d with groups=1 or an nn.Linear, called once) the pass
follows its output through operations that keep channels apart — BatchNorm (*followers*,
sliced with it), activations, dropout, pooling, spatial means, flatten — to the layers that
read it (*consumers*: Conv2d with groups=1, Linear), whose input channels are removed too.
A producer whose channels reach anything else (the model output, a residual add, a concat,
a reshape that mixes channels, LayerNorm, a grouped conv, ...) is not pruned and the reason
is reported; a model fx cannot trace is an error.

Channel layout: along the way, channel c of the producer occupies indices
[c*inner, (c+1)*inner) of dimension ``dim`` of a tensor (inner = H*W after a flatten).
"""
from __future__ import annotations

import inspect
import math
import operator
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from .. import inputs
from . import calibration, criteria
from .layers import Ratio, _packed_hint, check_ratio, select_layers

# -- operations that keep channels apart ----------------------------------------------------

_ELEMENTWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh,
                        nn.Hardswish, nn.Hardsigmoid, nn.ELU, nn.Mish, nn.Softplus, nn.PReLU,
                        nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout)
_POOL_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_ELEMENTWISE_FUNCTIONS = {F.relu, torch.relu, F.relu6, F.gelu, F.silu, torch.sigmoid,
                          F.sigmoid, torch.tanh, F.tanh, F.leaky_relu, F.hardswish, F.elu,
                          F.softplus, F.mish, F.dropout, F.hardsigmoid, torch.nn.functional.relu_,
                          torch.relu_}
_POOL_FUNCTIONS = {F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d}
_ELEMENTWISE_METHODS = {"relu", "relu_", "sigmoid", "tanh", "contiguous", "clone", "detach"}
_REDUCE_METHODS = {"mean", "sum", "amax"}
_REDUCE_FUNCTIONS = {torch.mean, torch.sum, torch.amax}
_SCALAR_OPS = {operator.add, operator.sub, operator.mul, operator.truediv, torch.add, torch.mul}


@dataclass
class ChannelGroup:
    """One producer, the BatchNorms sliced with it, and the layers whose inputs shrink."""

    producer: str
    channels: int
    followers: List[str] = field(default_factory=list)
    consumers: List[Tuple[str, int]] = field(default_factory=list)  # (name, inner)
    reads: List[Tuple[torch.fx.Node, int, int]] = field(default_factory=list)  # (node, dim, inner)


@dataclass
class ChannelResult:
    """What channel pruning did to one producer."""

    kept: List[int]
    removed: List[int]
    followers: List[str]
    consumers: List[str]

    @property
    def before(self) -> int:
        return len(self.kept) + len(self.removed)

    @property
    def after(self) -> int:
        return len(self.kept)


@dataclass
class ChannelPruneReport:
    """``pruned``: {producer: ChannelResult}; ``skipped``: {layer: why it was not pruned}."""

    pruned: Dict[str, ChannelResult] = field(default_factory=dict)
    skipped: Dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"{n}: {r.before} -> {r.after} channels "
                 f"(also {', '.join(r.followers + r.consumers)})" for n, r in self.pruned.items()]
        lines += [f"{n}: not pruned ({why})" for n, why in self.skipped.items()]
        return "\n".join(lines)


#: Why the last layer of a classifier is never channel-pruned (expected: not warned about).
REACHES_OUTPUT = "its channels reach the model output"


class _Unsupported(Exception):
    pass


# -- tracing ---------------------------------------------------------------------------------

def trace(model: nn.Module, example_input: torch.Tensor,
          what: str = "example_input") -> torch.fx.GraphModule:
    """fx-trace ``model`` and annotate every node with its output shape; errors about
    ``example_input`` (any item of :mod:`sparsekern.inputs`) name it ``what``."""
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as e:  # fx raises many kinds (TraceError, TypeError, ...)
        raise ValueError(f"channel pruning traces the model with torch.fx, which could not trace "
                         f"{type(model).__name__}: {type(e).__name__}: {e}. Make its forward "
                         f"traceable or use a mask granularity ('fine', '2:4', blocks)") from e
    inputs.check_not_empty(example_input, what)
    args, kwargs = inputs.split(example_input, what)
    with inputs.eval_mode(model), inputs.eval_mode(gm):
        with torch.no_grad(), calibration._current_layer_tracker(gm) as stack:
            try:
                ShapeProp(gm).propagate(*_positional(gm, args, kwargs))
            except Exception as e:
                wrong_dtype = calibration.dtype_mismatch(model, example_input, what, e)
                if wrong_dtype is not None:
                    raise wrong_dtype from e
                layer = f"layer {stack[-1]!r}" if stack else f"the model {type(model).__name__}"
                raise ValueError(f"{what} of shape {inputs.describe(example_input)} does "
                                 f"not fit {layer}: {e}") from e
    return gm


def _positional(gm: torch.fx.GraphModule, args, kwargs) -> tuple:
    """The traced forward's arguments in placeholder order (fx interpreters take no kwargs)."""
    if not kwargs:
        return tuple(args)
    try:
        bound = inspect.signature(gm.forward).bind(*args, **kwargs)
    except TypeError as e:
        raise ValueError(f"the model's inputs {list(kwargs)} do not match its forward: {e}") from e
    bound.apply_defaults()
    return tuple(bound.args)


def _shape(node: torch.fx.Node) -> Tuple[int, ...]:
    meta = node.meta.get("tensor_meta")
    if meta is None or not hasattr(meta, "shape"):
        raise _Unsupported(f"{node.name} has no tensor shape")
    return tuple(meta.shape)


def _flatten_layout(src_shape, dim, inner, start, end):
    nd = len(src_shape)
    start, end = start % nd, end % nd
    if dim < start:
        return dim, inner
    if dim > end:
        return dim - (end - start), inner
    if dim != start:
        raise _Unsupported("a flatten merges the channel dimension into an earlier one")
    return start, inner * math.prod(src_shape[dim + 1:end + 1])


def _arg(node, pos, name, default):
    if len(node.args) > pos:
        return node.args[pos]
    return node.kwargs.get(name, default)


def _other_tensor_args(node, current) -> bool:
    args = list(node.args) + list(node.kwargs.values())
    return any(isinstance(a, torch.fx.Node) and a is not current for a in args)


def _reduce_dims(node) -> Optional[List[int]]:
    d = _arg(node, 1, "dim", None)
    if d is None:
        return None
    return [d] if isinstance(d, int) else list(d)


class _Walker:
    """Follows one producer's channels through the graph, filling its ChannelGroup."""

    def __init__(self, modules: Dict[str, nn.Module], calls: Dict[str, int], group: ChannelGroup):
        self.modules, self.calls, self.group = modules, calls, group
        self.seen = set()

    def _reduce(self, user: torch.fx.Node, what: str, dim: int, inner: int, nd: int) -> None:
        """A mean/sum/amax over other dimensions (e.g. global average pooling) keeps channels."""
        dims = _reduce_dims(user)
        keepdim = _arg(user, 2, "keepdim", False)
        if dims is None or inner != 1 or any(d % nd == dim for d in dims):
            raise _Unsupported(f"a {what} reduces over its channels")
        self.follow(user, dim if keepdim else dim - sum(1 for d in dims if d % nd < dim), inner)

    def follow(self, node: torch.fx.Node, dim: int, inner: int) -> None:
        """Walk every user of ``node`` (channels at ``dim``/``inner``); fills ``group``."""
        if node in self.seen:
            return
        self.seen.add(node)
        shape = _shape(node)
        for user in list(node.users):
            if user.op == "output":
                raise _Unsupported(REACHES_OUTPUT)
            step = {"call_module": self._module_user, "call_function": self._function_user,
                    "call_method": self._method_user}.get(user.op)
            if step is None:
                raise _Unsupported(f"it is used by a {user.op} node")
            step(node, user, shape, dim, inner)

    def _module_user(self, node, user, shape, dim: int, inner: int) -> None:
        """A module call reading ``node``: a consumer, a follower, or unsupported."""
        modules, calls, group = self.modules, self.calls, self.group
        nd = len(shape)
        mod = modules[user.target]
        name = user.target
        if user.args[0] is not node or _other_tensor_args(user, node) and \
                not isinstance(mod, (nn.Conv2d, nn.Linear)):
            raise _Unsupported(f"{name} ({type(mod).__name__}) reads it with other tensors")
        if isinstance(mod, (nn.Conv2d, nn.Linear)) and calls[name] > 1:
            raise _Unsupported(f"it feeds {name}, which is called {calls[name]} times")
        if type(mod) is nn.Conv2d:
            if mod.groups != 1:
                raise _Unsupported(f"it feeds the grouped Conv2d {name} "
                                   f"(groups={mod.groups})")
            if dim != 1 or inner != 1 or nd != 4:
                raise _Unsupported(f"it reaches {name} (Conv2d) reshaped")
            group.consumers.append((name, 1))
            group.reads.append((node, dim, inner))
        elif type(mod) is nn.Linear:
            if dim != nd - 1:
                raise _Unsupported(f"it reaches {name} (Linear) along dimension {dim}, not "
                                   f"the last")
            if mod.in_features != group.channels * inner:
                raise _Unsupported(f"{name} has {mod.in_features} inputs, not "
                                   f"{group.channels}x{inner}")
            group.consumers.append((name, inner))
            group.reads.append((node, dim, inner))
        elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
            if dim != 1 or inner != 1:
                raise _Unsupported(f"it reaches {name} (BatchNorm) reshaped")
            if calls[name] > 1:
                raise _Unsupported(f"{name} (BatchNorm) is called {calls[name]} times")
            group.followers.append(name)
            self.follow(user, dim, inner)
        elif isinstance(mod, nn.PReLU) and mod.num_parameters != 1:
            raise _Unsupported(f"{name} (PReLU) has one slope per channel")
        elif isinstance(mod, _ELEMENTWISE_MODULES):
            self.follow(user, dim, inner)
        elif isinstance(mod, _POOL_MODULES):
            if dim != 1 or inner != 1:
                raise _Unsupported(f"it reaches {name} ({type(mod).__name__}) reshaped")
            self.follow(user, dim, inner)
        elif isinstance(mod, nn.Flatten):
            d, i = _flatten_layout(shape, dim, inner, mod.start_dim, mod.end_dim)
            self.follow(user, d, i)
        else:
            raise _Unsupported(f"it feeds {name} ({type(mod).__name__}), which sparsekern "
                               f"cannot follow")

    def _function_user(self, node, user, shape, dim: int, inner: int) -> None:
        """A function call reading ``node`` (elementwise, pooling, flatten, reduce)."""
        nd = len(shape)
        fn = user.target
        fname = getattr(fn, "__name__", str(fn))
        if fn in _SCALAR_OPS and not _other_tensor_args(user, node):
            self.follow(user, dim, inner)  # x * 0.5, x + 1
        elif fn in _ELEMENTWISE_FUNCTIONS and user.args and user.args[0] is node and \
                not _other_tensor_args(user, node):
            self.follow(user, dim, inner)
        elif fn in _POOL_FUNCTIONS and user.args[0] is node:
            if dim != 1 or inner != 1:
                raise _Unsupported(f"it reaches {fname} reshaped")
            self.follow(user, dim, inner)
        elif fn is torch.flatten and user.args[0] is node:
            d, i = _flatten_layout(shape, dim, inner, _arg(user, 1, "start_dim", 0),
                                   _arg(user, 2, "end_dim", -1))
            self.follow(user, d, i)
        elif fn in _REDUCE_FUNCTIONS and user.args[0] is node:
            self._reduce(user, fname, dim, inner, nd)
        elif fn in _SCALAR_OPS:
            raise _Unsupported(f"{fname} combines it with another tensor (e.g. a residual "
                               f"connection), which couples its channels to another "
                               f"layer's")
        else:
            raise _Unsupported(f"it is used by {fname}, which sparsekern cannot follow")

    def _method_user(self, node, user, shape, dim: int, inner: int) -> None:
        """A tensor method reading ``node`` (elementwise, flatten, view/reshape, reduce)."""
        nd = len(shape)
        m = user.target
        if m in _ELEMENTWISE_METHODS and user.args[0] is node and \
                not _other_tensor_args(user, node):
            self.follow(user, dim, inner)
        elif m == "flatten" and user.args[0] is node:
            d, i = _flatten_layout(shape, dim, inner, _arg(user, 1, "start_dim", 0),
                                   _arg(user, 2, "end_dim", -1))
            self.follow(user, d, i)
        elif m in ("view", "reshape") and user.args[0] is node:
            out = _shape(user)
            if dim == 1 and nd >= 2 and out == (shape[0], math.prod(shape[1:])):
                self.follow(user, 1, inner * math.prod(shape[2:]))
            elif out == shape:
                self.follow(user, dim, inner)
            else:
                raise _Unsupported(f"a {m} to {list(out)} mixes its channel dimension")
        elif m in _REDUCE_METHODS and user.args[0] is node:
            self._reduce(user, m, dim, inner, nd)
        else:
            raise _Unsupported(f"it is used by the method .{m}(), which sparsekern cannot "
                               f"follow")


def plan(model: nn.Module, example_input: torch.Tensor, layers=None,
         what: str = "example_input"
         ) -> Tuple[torch.fx.GraphModule, Dict[str, ChannelGroup], Dict[str, str]]:
    """Trace ``model`` on ``example_input`` (named ``what`` in errors) and find every
    prunable channel group.

    Returns (traced module, {producer: ChannelGroup} in graph order, {layer: reason skipped}).
    """
    gm = trace(model, example_input, what)
    modules = dict(gm.named_modules())
    calls: Dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    wanted = None if layers is None else set(select_layers(model, layers))
    groups: Dict[str, ChannelGroup] = {}
    skipped: Dict[str, str] = {}
    done = set()
    for node in gm.graph.nodes:
        if node.op != "call_module" or node.target in done:
            continue
        mod = modules[node.target]
        if type(mod) not in (nn.Conv2d, nn.Linear):
            continue
        name = node.target
        done.add(name)
        if wanted is not None and name not in wanted:
            continue
        try:
            if calls[name] > 1:
                raise _Unsupported(f"it is called {calls[name]} times")
            if isinstance(mod, nn.Conv2d) and mod.groups != 1:
                raise _Unsupported(f"it is a grouped Conv2d (groups={mod.groups})")
            shape = _shape(node)
            dim = 1 if isinstance(mod, nn.Conv2d) else len(shape) - 1
            group = ChannelGroup(name, mod.weight.shape[0])
            _Walker(modules, calls, group).follow(node, dim, 1)
            if not group.consumers:
                raise _Unsupported("no Linear/Conv2d reads its output")
            groups[name] = group
        except _Unsupported as e:
            skipped[name] = str(e)
    if wanted is not None:
        for name in sorted(wanted - done):
            skipped[name] = "it is never called in the traced forward"
    return gm, groups, skipped


# -- scores ----------------------------------------------------------------------------------

def _apoz_scores(gm: torch.fx.GraphModule, groups: Dict[str, ChannelGroup], calib
                 ) -> Dict[str, torch.Tensor]:
    """1 - APoZ of every group's channels, measured where its consumers read it."""
    watch: Dict[torch.fx.Node, List[Tuple[str, str, int, int]]] = {}
    for g in groups.values():
        for (node, dim, inner), (consumer, _) in zip(g.reads, g.consumers):
            watch.setdefault(node, []).append((g.producer, consumer, dim, inner))
    zeros = {n: torch.zeros(g.channels, dtype=torch.float64) for n, g in groups.items()}
    counts = {n: 0 for n in groups}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n):
            result = super().run_node(n)
            for producer, consumer, dim, inner in watch.get(n, ()):
                traced = _shape(n)
                if tuple(result.shape[1:]) != traced[1:]:
                    raise ValueError(f"the input of layer {consumer!r} has shape "
                                     f"{list(result.shape)}; expected {['N', *traced[1:]]} as "
                                     f"traced with example_input")
                z, c = criteria.channel_zero_fraction(result, dim, inner,
                                                      groups[producer].channels)
                zeros[producer] += z.cpu()
                counts[producer] += c
            return result

    rec = Recorder(gm)
    calibration.run(gm, calib, call=lambda *a, **k: rec.run(*_positional(gm, a, k)))
    return {n: 1.0 - zeros[n] / max(1, counts[n]) for n in groups}


def _consumer_inputs(model: nn.Module, name: str, calib) -> torch.Tensor:
    """The consumer's input matrix [rows, K] over the calibration batches."""
    mod = model.get_submodule(name)
    rows = []
    h = mod.register_forward_pre_hook(
        lambda m, args: rows.append(criteria.layer_input_matrix(m, args[0].detach()).double()))
    try:
        calibration.run(model, calib)
    finally:
        h.remove()
    return torch.cat(rows)


# -- surgery ---------------------------------------------------------------------------------

def _param(t: torch.Tensor, like: nn.Parameter) -> nn.Parameter:
    return nn.Parameter(t.detach().clone().contiguous(), requires_grad=like.requires_grad)


@torch.no_grad()
def _remove_channels(model: nn.Module, group: ChannelGroup, keep: torch.Tensor,
                     refit: Optional[torch.Tensor] = None) -> None:
    """Slice the producer's outputs, its BatchNorms and its consumers' inputs to ``keep``."""
    prod = model.get_submodule(group.producer)
    keep_d = keep.to(prod.weight.device)
    prod.weight = _param(prod.weight[keep_d], prod.weight)
    if prod.bias is not None:
        prod.bias = _param(prod.bias[keep_d], prod.bias)
    if isinstance(prod, nn.Conv2d):
        prod.out_channels = len(keep)
    else:
        prod.out_features = len(keep)
    for name in group.followers:
        bn = model.get_submodule(name)
        if bn.weight is not None:
            bn.weight = _param(bn.weight[keep_d], bn.weight)
            bn.bias = _param(bn.bias[keep_d], bn.bias)
        if bn.running_mean is not None:
            bn.running_mean = bn.running_mean[keep_d].clone()
            bn.running_var = bn.running_var[keep_d].clone()
        bn.num_features = len(keep)
    for name, inner in group.consumers:
        cons = model.get_submodule(name)
        W = cons.weight
        if isinstance(cons, nn.Conv2d):
            new = W[:, keep_d] if refit is None else refit.reshape(W.shape[0], len(keep),
                                                                    *W.shape[2:])
            cons.weight = _param(new.to(W.dtype), W)
            cons.in_channels = len(keep)
        else:
            cols = (keep_d.view(-1, 1) * inner + torch.arange(inner, device=W.device)).reshape(-1)
            new = W[:, cols] if refit is None else refit
            cons.weight = _param(new.to(W.dtype), W)
            cons.in_features = len(cols)


def _bn_scale_source(model: nn.Module, group: ChannelGroup) -> Optional[str]:
    """The first BatchNorm following the producer that has a scale (gamma), or None."""
    for name in group.followers:
        if model.get_submodule(name).weight is not None:
            return name
    return None


_CHANNEL_ATTRS = ("in_channels", "out_channels", "in_features", "out_features", "num_features")


def _snapshot(model: nn.Module, groups: Dict[str, ChannelGroup]) -> Dict[str, tuple]:
    """Every module the surgery of ``groups`` touches: its parameters, buffers and channel
    counts (surgery assigns new tensors, so keeping the old objects is enough to restore)."""
    names = set()
    for g in groups.values():
        names.update([g.producer, *g.followers, *(c for c, _ in g.consumers)])
    saved = {}
    for name in names:
        mod = model.get_submodule(name)
        saved[name] = (dict(mod._parameters), dict(mod._buffers),
                       {a: getattr(mod, a) for a in _CHANNEL_ATTRS if hasattr(mod, a)})
    return saved


def _restore(model: nn.Module, saved: Dict[str, tuple]) -> None:
    for name, (params, buffers, attrs) in saved.items():
        mod = model.get_submodule(name)
        mod._parameters.update(params)
        mod._buffers.update(buffers)
        for a, v in attrs.items():
            setattr(mod, a, v)


# -- the entry point -------------------------------------------------------------------------

def _example_input(example_input, calib) -> Tuple[object, str]:
    """(the item to trace the model with, its name in errors): ``example_input``, else the
    first calibration batch."""
    if example_input is not None:
        return example_input, "example_input"
    if calib is None:
        raise ValueError("channel pruning needs example_input (one batch of model inputs) "
                         "or calib to trace the model with")
    return calibration.batches(calib)[0], "calib batch 0"


def select_channel_layers(model: nn.Module, example_input, criterion: str = "l1", layers=None,
                          traced_with: str = "example_input"
                          ) -> Tuple[torch.fx.GraphModule, Dict[str, ChannelGroup],
                                     Dict[str, str]]:
    """The layers channel_prune prunes (and sensitivity_scan sweeps at channel granularity):
    (traced module, {producer: ChannelGroup}, {layer: why it is left alone}).

    Without ``layers``, every Conv2d/Linear that can be pruned with ``criterion``; the others
    are only reported in the third item. A layer named in ``layers`` that cannot be pruned,
    or a model with no such layer, raises ValueError."""
    hint = _packed_hint(model)
    if hint:  # fx cannot trace them ("x must be a torch.Tensor ... got Proxy" named nothing)
        raise ValueError(f"channel_prune needs the dense model (it traces it with torch.fx)"
                         f"{hint}")
    gm, groups, skipped = plan(model, example_input, layers, traced_with)
    if criterion == "bn_scale":
        for name in [n for n, g in groups.items() if not g.followers]:
            skipped[name] = "no BatchNorm follows it (criterion 'bn_scale')"
            del groups[name]
        for name in [n for n, g in groups.items() if _bn_scale_source(model, g) is None]:
            skipped[name] = (f"its BatchNorm {', '.join(groups[name].followers)} has no scale "
                             f"(affine=False) (criterion 'bn_scale')")
            del groups[name]
    if criterion == "regression":
        for name in [n for n, g in groups.items() if len(g.consumers) != 1]:
            skipped[name] = (f"criterion 'regression' needs exactly one consuming layer, it has "
                             f"{len(groups[name].consumers)}")
            del groups[name]
    if layers is not None:
        for name in (layers if not isinstance(layers, str) else [layers]):
            if name in skipped:
                raise ValueError(f"layer {name!r} cannot be channel-pruned: {skipped[name]}")
    if not groups:
        raise ValueError(f"model {type(model).__name__} has no channel-prunable layers: "
                         + "; ".join(f"{n}: {why}" for n, why in skipped.items()))
    return gm, groups, skipped


def channel_prune(model: nn.Module, ratio: Ratio, example_input=None,
                  criterion: str = "l1", calib=None, layers=None, progress: bool = False,
                  warn: bool = True) -> ChannelPruneReport:
    """Remove ``ratio`` of the output channels of every traceable Conv2d/Linear, in place.

    Args:
        model: an nn.Module that torch.fx can trace; its layers are shrunk in place (new
            Parameters: build the optimizer after pruning).
        ratio: fraction of channels removed per layer, in [0, 1), or {layer: ratio}
            (which also selects the layers). At least one channel is always kept.
        example_input: one batch of inputs to trace shapes, any item of sparsekern.inputs
            (default: the first calib batch).
        criterion: "l1", "l2" (weight norms), "bn_scale" (|gamma| of the following BatchNorm),
            "apoz" (calibration activations) or "regression" (calibration reconstruction of
            the consuming layer, whose kept weights are refit).
        calib: calibration inputs for "apoz" and "regression".
        layers: names of the producers to prune (default: all that can be).
        warn: warn once listing the layers that could not be pruned and why (except layers
            whose channels are the model's output, which are only reported).
    Returns:
        ChannelPruneReport: kept/removed channels per pruned layer and the reasons for every
        layer left alone. A layer named in ``layers`` that cannot be pruned raises ValueError.
    """
    criteria.check_criterion(criterion, channel=True)
    calib = calibration.replayable(calib)
    if criterion in criteria.NEEDS_CALIB and calib is None:
        raise ValueError(f"criterion {criterion!r} needs calibration data (calib=...)")
    if isinstance(ratio, Mapping) and layers is None:
        layers = list(ratio)
    example_input, traced_with = _example_input(example_input, calib)
    if isinstance(ratio, Mapping):
        ratios = {n: check_ratio(r, n) for n, r in ratio.items()}
    elif ratio is None:
        raise ValueError("ratio is required for channel pruning (a number in [0, 1) or a "
                         "{layer: ratio} mapping)")
    else:
        r = check_ratio(ratio)
        ratios = None
    gm, groups, skipped = select_channel_layers(model, example_input, criterion, layers,
                                                traced_with)
    unexpected = {n: why for n, why in skipped.items() if why != REACHES_OUTPUT}
    if warn and unexpected:
        warnings.warn("channel pruning left these layers alone: " +
                      "; ".join(f"{n}: {why}" for n, why in unexpected.items()), stacklevel=2)

    # Everything that can refuse runs before the first layer is changed.
    if ratios is not None:
        missing = [n for n in groups if n not in ratios]
        if missing:
            raise ValueError(f"ratio has no entry for the layers {missing} named in layers; "
                             f"give every layer a ratio (or a single number)")
    n_keeps = {}
    for name, group in groups.items():
        rr = ratios[name] if ratios is not None else r
        n_keeps[name] = max(1, group.channels - int(round(rr * group.channels)))
    scores: Dict[str, torch.Tensor] = {}
    if criterion == "apoz":
        scores = _apoz_scores(gm, groups, calib)
    report = ChannelPruneReport(skipped=dict(skipped))
    saved = _snapshot(model, groups)
    try:
        _prune_groups(model, groups, n_keeps, criterion, calib, scores, progress, report)
    except BaseException:
        _restore(model, saved)  # no half-pruned model (e.g. a calibration batch that fails)
        raise
    return report


def _prune_groups(model: nn.Module, groups: Dict[str, ChannelGroup], n_keeps: Dict[str, int],
                  criterion: str, calib, scores: Dict[str, torch.Tensor], progress: bool,
                  report: ChannelPruneReport) -> None:
    """The surgery of channel_prune, group after group (fills ``report.pruned``)."""
    items = list(groups.items())
    if progress:
        from tqdm.auto import tqdm
        items = tqdm(items, desc="channel pruning")
    for name, group in items:
        C = group.channels
        n_keep = n_keeps[name]
        refit = None
        if criterion == "regression":
            cname, inner = group.consumers[0]
            cons = model.get_submodule(cname)
            X = _consumer_inputs(model, cname, calib)
            per = inner if isinstance(cons, nn.Linear) else \
                cons.kernel_size[0] * cons.kernel_size[1]
            keep, refit = criteria.regression_select(X, cons.weight.detach().reshape(
                cons.weight.shape[0], -1), per, n_keep)
        else:
            if criterion in ("l1", "l2"):
                s = criteria.channel_norms(model.get_submodule(name), criterion)
            elif criterion == "bn_scale":
                bn = model.get_submodule(_bn_scale_source(model, group))
                s = bn.weight.detach().double().abs()
            else:
                s = scores[name]
            order = torch.argsort(s.cpu(), descending=True, stable=True)
            keep = order[:n_keep].sort().values
        _remove_channels(model, group, keep, refit)
        kept = keep.tolist()
        removed = sorted(set(range(C)) - set(kept))
        report.pruned[name] = ChannelResult(kept, removed, list(group.followers),
                                            [c for c, _ in group.consumers])
