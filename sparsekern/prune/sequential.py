"""Sequential calibration: prune layers in forward order, each from the inputs it receives
from the model with every earlier layer already pruned.

One pass over the first calibration item records the order in which the layers run and
groups consecutive layers that read the same input tensor (an attention block's q, k and v
projections): a group shares one statistic and one pass. Then, group by group, the model
runs on every calibration item with hooks that accumulate the group's statistic — the
Hessian X^T X for SparseGPT, the squared column norms for Wanda — and stop the forward
(:class:`~sparsekern.prune.calibration.StopForward`) once the group's inputs are seen; the
group is pruned before the next group's pass. Cost: one partial forward per group;
memory: one group's statistic at a time.

Fast path (:func:`find_chain`): when every pruned layer sits in the blocks of one
nn.ModuleList through which the hidden state flows directly (a transformer's layers; checked
on the first item by object identity of each block's input and the previous block's output),
block 0's inputs are cached for every item and each group runs only its own block on the
cached inputs; once a block is pruned, its outputs become the next block's cached inputs
(as in the reference implementations). Cached inputs take one hidden state per item.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from .. import inputs
from . import calibration
from .criteria import layer_input_matrix, no_tokens_error
from .sparsegpt import HessianSum

#: A statistic: (init(module) -> state, update(state, X [rows, K]) -> state).
Stat = Tuple[Callable[[nn.Module], object], Callable[[object, torch.Tensor], object]]


def hessian_stat() -> Stat:
    """X^T X of the layer's input matrix, as a :class:`~sparsekern.prune.sparsegpt.HessianSum`
    (its ``H``: float32 [K, K], X^T X times a power of 4 that keeps it in float32's range)."""
    def init(m):
        return HessianSum()

    def update(H, X):
        return H.add(X)
    return init, update


def sq_norm_stat() -> Stat:
    """sum of X_j^2 (float64 [K]) of every input column j."""
    def init(m):
        return None

    def update(s, X):
        X = X.double()
        return (X * X).sum(0) if s is None else s + (X * X).sum(0)
    return init, update


def forward_groups(model: nn.Module, modules: Dict[str, nn.Module], calib
                   ) -> Tuple[List[List[str]], bool]:
    """(groups of layer names in forward order, whether a layer runs twice in one forward).

    Consecutive non-Conv2d layers reading the very same input tensor form one group.
    Raises ValueError naming any selected layer the first calibration item never reaches.
    """
    order: List[str] = []
    last_input: List[object] = [None]
    groups: List[List[str]] = []
    calls: Dict[str, int] = {}

    def hook(name, mod, args):
        calls[name] = calls.get(name, 0) + 1
        if calls[name] > 1:
            return
        x = args[0] if args else None
        shares = (groups and x is not None and x is last_input[0]
                  and not isinstance(mod, nn.Conv2d)
                  and not isinstance(modules[groups[-1][-1]], nn.Conv2d))
        if shares:
            groups[-1].append(name)
        else:
            groups.append([name])
        last_input[0] = x
        order.append(name)

    handles = [m.register_forward_pre_hook(lambda mod, args, n=n: hook(n, mod, args))
               for n, m in modules.items()]
    try:
        calibration.run(model, calibration.batches(calib)[:1])
    finally:
        for h in handles:
            h.remove()
    missing = [n for n in modules if n not in calls]
    if missing:
        raise ValueError(f"layers {missing} were never called on the calibration data, so "
                         f"they cannot be calibrated; exclude them (layers=...)")
    return groups, any(c > 1 for c in calls.values())


def collect(model: nn.Module, group: List[str], modules: Dict[str, nn.Module], calib,
            stat: Stat, stop_early: bool, runner: Optional[Callable[[], None]] = None,
            root: Optional[nn.Module] = None) -> Dict[str, object]:
    """{layer: its statistic over every calibration item} for one group (shared input: the
    first layer's statistic is computed once and given to all).

    ``runner`` runs the items (default: ``model`` on ``calib``) with ``root`` (default:
    ``model``) the module each run starts with.
    """
    init, update = stat
    state: Dict[str, object] = {group[0]: init(modules[group[0]])}
    seen: set = set()
    lead = group[0]
    rows = [0, 0]  # rows of the lead layer's inputs, calls of it

    def reset(mod, args):
        seen.clear()

    def hook(name, mod, args):
        if name == lead:  # every call counts (a layer may run twice in one forward)
            X = layer_input_matrix(mod, args[0].detach())
            state[lead] = update(state[lead], X)
            rows[0] += X.shape[0]
            rows[1] += 1
        seen.add(name)
        if stop_early and len(seen) == len(group):
            raise calibration.StopForward

    handles = [(root or model).register_forward_pre_hook(reset, prepend=True)]
    handles += [modules[n].register_forward_pre_hook(lambda mod, args, n=n: hook(n, mod, args))
                for n in group]
    try:
        if runner is None:
            calibration.run(model, calib)
        else:
            runner()
    finally:
        for h in handles:
            h.remove()
    if not rows[1]:
        raise ValueError(f"layer {lead!r} was never called on the calibration data")
    if rows[0] == 0:
        raise no_tokens_error(lead)
    return {n: state[lead] for n in group}


# -- the fast path: a chain of blocks (a transformer's layers) --------------------------------

class Chain:
    """A stack of blocks (the children of one nn.ModuleList) through which the hidden state
    flows directly: block i's first argument is block i-1's output tensor, and every block's
    other arguments are the same objects (an attention mask). Then each block can be run on
    its own from cached inputs instead of re-running the model from its input."""

    def __init__(self, path: str, blocks: List[nn.Module], owner: Dict[str, int]):
        self.path, self.blocks, self.owner = path, blocks, owner
        # (block input, other args, kwargs, the item's token mask) per calibration item
        self.cache: List[Tuple[torch.Tensor, tuple, dict, object]] = []

    def run_block(self, i: int, keep_outputs: bool) -> None:
        """Block i on every cached input; with keep_outputs the cache becomes its outputs."""
        out = []
        for x, rest, kwargs, mask in self.cache:
            try:
                with inputs.token_mask(mask):
                    y = self.blocks[i](x, *rest, **kwargs)
            except calibration.StopForward:
                continue
            if keep_outputs:
                out.append((_first_tensor(y), rest, kwargs, mask))
        if keep_outputs:
            self.cache = out


def _first_tensor(y):
    while isinstance(y, (tuple, list)) and y:
        y = y[0]
    return y


def find_chain(model: nn.Module, modules: Dict[str, nn.Module], calib) -> Optional[Chain]:
    """A :class:`Chain` holding every layer of ``modules``, checked on the first calibration
    item, with its cache filled with block 0's inputs for every item; None when the model
    has no such chain (then the model is re-run from its input for every group)."""
    for path, lst in model.named_modules():
        if not isinstance(lst, nn.ModuleList) or len(lst) < 2:
            continue
        owner = {}
        for i, blk in enumerate(lst):
            for n, m in blk.named_modules():
                for name, mod in modules.items():
                    if mod is m:
                        owner[name] = i
        if len(owner) == len(modules):
            chain = Chain(path, list(lst), owner)
            return chain if _check_and_fill(model, chain, calib) else None
    return None


def _check_and_fill(model: nn.Module, chain: Chain, calib) -> bool:
    seen: List[tuple] = []
    outs: List[object] = []

    def pre(i):
        def hook(mod, args, kwargs):
            seen.append((i, args, kwargs))
        return hook

    def post(mod, args, kwargs, out):
        outs.append(_first_tensor(out))

    handles = []
    for i, b in enumerate(chain.blocks):
        handles.append(b.register_forward_pre_hook(pre(i), with_kwargs=True))
        handles.append(b.register_forward_hook(post, with_kwargs=True))
    try:
        calibration.run(model, calibration.batches(calib)[:1])
    finally:
        for h in handles:
            h.remove()
    n = len(chain.blocks)
    if [s[0] for s in seen] != list(range(n)) or len(outs) != n:
        return False
    first_rest, first_kw = seen[0][1][1:], seen[0][2]
    for i in range(n):
        args, kwargs = seen[i][1], seen[i][2]
        if not args or not isinstance(args[0], torch.Tensor):
            return False
        if i and args[0] is not outs[i - 1]:
            return False
        if not _same(args[1:], first_rest) or kwargs.keys() != first_kw.keys() or \
                not _same(tuple(kwargs.values()), tuple(first_kw.values())):
            return False
        if not all(_replayable(v) for v in tuple(args[1:]) + tuple(kwargs.values())):
            return False  # a stateful argument (a key/value cache object): re-run the model
    cache = []

    def catch(mod, args, kwargs):
        cache.append((args[0], tuple(args[1:]), dict(kwargs), inputs.current_token_mask()))
        raise calibration.StopForward

    h = chain.blocks[0].register_forward_pre_hook(catch, with_kwargs=True)
    try:
        calibration.run(model, calib)
    finally:
        h.remove()
    chain.cache = cache
    return True


def _same(a: tuple, b: tuple) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
            if x is not y:
                return False
        elif x is not y and not (type(x) is type(y) and _plain(x) and x == y):
            return False
    return True


def _replayable(x) -> bool:
    """Whether a block argument may be passed again on a replay: tensors, plain values and
    tuples/lists of them. Any other object may be state the block mutates (a Hugging Face
    ``Cache`` appends each call's keys), so a chain holding one is not replayed."""
    if isinstance(x, torch.Tensor) or _plain(x):
        return True
    if isinstance(x, (tuple, list)):
        return all(_replayable(v) for v in x)
    return False


def _plain(x) -> bool:
    return x is None or isinstance(x, (bool, int, float, str))
