"""prune_model: compute masks for a granularity and a criterion, and apply them."""
from __future__ import annotations

import warnings
from typing import Dict, Mapping, Optional

import torch
from torch import nn

from .. import inputs
from .._warn import user_stacklevel
from . import calibration, criteria, sequential, sparsegpt
from .granularity import NM, Block, Channel, Fine, Kernel, parse
from .layers import (Ratio, from_matrix, layers_of_ratio, resolve_ratios, select_layers,
                     to_matrix, weight_matrix)
from .sparsegpt import SparseGPTConfig
from .masks import Masks, apply_masks, check_masks

SCOPES = ("layer", "global")


def pruned_layers(model: nn.Module, layers, g) -> Dict[str, nn.Module]:
    """The layers prune_model prunes at granularity ``g`` (parsed; not "channel", see
    channel.select_channel_layers): ``layers`` (checked) or, by default, every prunable layer
    (every nn.Conv2d for kernel granularity). sensitivity_scan sweeps the same ones."""
    return select_layers(model, layers, need_conv=isinstance(g, Kernel), writes=True)


def prune_model(model: nn.Module, ratio: Ratio = None, granularity="fine", criterion: str = "l1",
                calib=None, layers=None, scope: str = "layer",
                masks: Optional[Mapping[str, torch.Tensor]] = None, apply: bool = True,
                example_input=None, progress: bool = False, sequential: Optional[bool] = None,
                sparsegpt: Optional[SparseGPTConfig] = None):
    """Prune the Linear / Conv2d layers of ``model``.

    Args:
        model: any nn.Module (modified in place when ``apply``).
        ratio: fraction of weights removed, in [0, 1): one number, or {layer name: ratio}
            (which also selects the layers). Not needed for N:M (its ratio is 1 - N/M).
            Blocks: as nearly as whole blocks allow (edge blocks count their real size; a
            UserWarning names a layer more than 0.05 off).
        granularity: "fine", "2:4" / "1:4" / "2:8" / any "N:M", (bm, bk) or "BMxBK" blocks
            (e.g. (32, 32), (1, 8), (8, 1)), "kernel" (Conv2d only) or "channel".
        criterion: "l1", "l2", "wanda" or "sparsegpt" for weight-level granularities; "l1",
            "l2", "bn_scale", "apoz" or "regression" for "channel" (see criteria.py).
            "sparsegpt" supports "fine" (each row loses ``ratio`` of its weights), "N:M" and
            blocks, and also changes the kept weights (OBS reconstruction, see sparsegpt.py).
        calib: calibration inputs for "wanda", "sparsegpt", "apoz" and "regression": one
            batch or an iterable of batches (a list, a DataLoader), each a tensor, a Mapping
            such as a tokenizer's output (``model(**batch)``), ``sparsekern.Args(...)`` or
            an (inputs, targets) pair (see sparsekern.inputs).
        layers: names of the layers to prune (default: every nn.Linear and nn.Conv2d; every
            nn.Conv2d for "kernel").
        scope: "layer" (each layer loses ``ratio`` of its weights) or "global" (one threshold
            over all selected layers; fine granularity with "l1"/"l2" only).
        masks: masks of an earlier round; weights pruned there stay pruned.
        apply: zero the pruned weights in place (else only return the masks).
        example_input: for "channel" only: an input to trace shapes with (default: first
            calib batch).
        sequential: for "wanda" and "sparsegpt" (default True): prune layer by layer in
            forward order, each from the inputs it gets from the model with the layers before
            it already pruned (one partial forward over ``calib`` per group of layers that
            share an input, see sequential.py). False (Wanda only): every layer's input norms
            from one pass over the dense model. With ``apply=False`` the weights are
            restored afterwards (SparseGPT's weight updates are then lost).
        sparsegpt: SparseGPTConfig (damp: the dampening, blocksize: the lazy block size) for
            "sparsegpt" only.
    An argument the chosen criterion / granularity would ignore raises ValueError naming it
    (``sparsegpt`` without criterion "sparsegpt", ``example_input`` without "channel";
    for "channel" also ``masks``, ``apply=False``, ``scope="global"``, ``sequential``);
    ``calib`` for a criterion that reads no calibration data ("l1", "l2", "bn_scale") gets
    a UserWarning (wrappers such as auto.netadapt pass their ``calib`` through whatever
    the criterion).
    Returns:
        {layer name: bool mask of the weight's shape (True = kept)}; for "channel" the
        :class:`~sparsekern.prune.channel.ChannelPruneReport` (channels are removed
        physically, there is nothing to mask).
    """
    calib = calibration.replayable(calib)
    g = parse(granularity)
    _check_used(g, criterion, calib, example_input, sparsegpt)
    if isinstance(g, Channel):
        _check_channel_args(masks, apply, scope, sequential)
        from .channel import channel_prune
        return channel_prune(model, ratio, example_input=example_input, criterion=criterion,
                             calib=calib, layers=layers, progress=progress)
    criteria.check_criterion(criterion, channel=False)
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    modules = pruned_layers(model, layers_of_ratio(ratio, layers), g)
    if g.fixed_ratio is not None:
        if ratio is not None:
            for name, r in resolve_ratios(ratio, modules).items():
                if abs(r - g.fixed_ratio) > 1e-9:
                    raise ValueError(f"ratio {r} for layer {name!r} contradicts granularity "
                                     f"'{g}', which removes exactly {g.fixed_ratio:g}; leave "
                                     f"ratio=None")
        ratios = {n: g.fixed_ratio for n in modules}
    else:
        ratios = resolve_ratios(ratio, modules)
    for name, m in modules.items():
        g.check(name, m)
    if masks is not None:
        check_masks(model, masks)
    if criterion in criteria.NEEDS_CALIB and calib is None:
        raise ValueError(f"criterion {criterion!r} needs calibration data (calib=...)")
    seq = criterion == "sparsegpt" or (criterion == "wanda" and sequential is not False)
    if sequential is not None and criterion not in ("wanda", "sparsegpt"):
        raise ValueError(f"sequential applies to criteria 'wanda' and 'sparsegpt', not "
                         f"{criterion!r}")
    if criterion == "sparsegpt" and sequential is False:
        raise ValueError("criterion 'sparsegpt' is always sequential (each layer is "
                         "reconstructed from the already-pruned model's inputs)")
    if seq:
        if scope != "layer":
            raise ValueError("scope='global' needs granularity 'fine', criterion 'l1' or 'l2' "
                             "and one ratio for all layers")
        return _sequential(model, modules, g, ratios, criterion, calib, masks, apply,
                           sparsegpt or SparseGPTConfig(), progress)
    norms = {}
    if criterion in criteria.NEEDS_CALIB:
        norms = criteria.input_column_norms(model, modules, calib)

    scores: Dict[str, torch.Tensor] = {}
    for name, m in modules.items():
        s = criteria.weight_scores(criterion, m, norms.get(name))
        if masks is not None and name in masks:
            s = s.masked_fill(~masks[name].to(device=s.device, dtype=torch.bool), float("-inf"))
        scores[name] = to_matrix(m, s)  # [out, K] orientation: N:M groups run along K

    if scope == "global":
        if not isinstance(g, Fine) or criterion == "wanda" or isinstance(ratio, Mapping):
            raise ValueError("scope='global' needs granularity 'fine', criterion 'l1' or 'l2' "
                             "and one ratio for all layers")
        new = _global_fine(scores, ratios[next(iter(modules))])
    else:
        reduce = criteria.group_reduction(criterion)
        new = {name: g.mask(m, scores[name], ratios[name], name, reduce,
                            per_row=criterion == "wanda")
               for name, m in modules.items()}
    # Back to each weight's own shape (a Conv1D's mask is transposed back to [in, out]).
    new = {name: from_matrix(modules[name], k).contiguous() for name, k in new.items()}
    if masks is not None:
        for name in new:
            if name in masks:
                new[name] = new[name] & masks[name].to(device=new[name].device, dtype=torch.bool)
    if apply:
        apply_masks(model, new)
    return new


def _check_used(g, criterion, calib, example_input, sparsegpt) -> None:
    """Refuse an argument ``criterion`` / granularity ``g`` would silently ignore."""
    if sparsegpt is not None and not isinstance(sparsegpt, SparseGPTConfig):
        raise TypeError(f"sparsegpt must be a SparseGPTConfig or None, got "
                        f"{type(sparsegpt).__name__}")
    if sparsegpt is not None and criterion != "sparsegpt":
        raise ValueError(f"sparsegpt={sparsegpt} applies to criterion 'sparsegpt' only; got "
                         f"criterion {criterion!r}, which would ignore it: drop sparsegpt=... "
                         f"or use criterion='sparsegpt'")
    if example_input is not None and not isinstance(g, Channel):
        raise ValueError(f"example_input applies to granularity 'channel' only (it traces "
                         f"the model's shapes); granularity '{g}' would ignore it: drop "
                         f"example_input=... (calibration data goes in calib=...)")
    calib_checked(g, criterion, calib, example_input)


def calib_read(granularity, criterion: str, calib, example_input=None):
    """``calib`` when prune_model with this granularity and criterion reads it, else None:
    for callers that hold calibration data whatever the criterion (NetAdapt, AMC, schedules,
    sensitivity scans, the demo), so that prune_model does not warn about it."""
    # channel pruning traces the model with the first calib batch when example_input is None
    traces = isinstance(parse(granularity), Channel) and example_input is None
    return calib if criterion in criteria.NEEDS_CALIB or traces else None


def calib_checked(granularity, criterion: str, calib, example_input=None):
    """:func:`calib_read`, with one UserWarning at the user's line when ``calib`` was given
    but would not be read (a warning, not an error: generic code may pass its calib whatever
    the criterion). Schedules and scans call it once, then pass the result on."""
    used = calib_read(granularity, criterion, calib, example_input)
    if calib is not None and used is None:
        warnings.warn(f"calib is not used by criterion {criterion!r} (weights are scored "
                      f"without data); only {list(criteria.NEEDS_CALIB)} read calibration "
                      f"data: drop calib=... or use one of them", stacklevel=user_stacklevel())
    return used


def _check_channel_args(masks, apply, scope, sequential) -> None:
    """Refuse prune_model's weight-level arguments for "channel", which removes channels
    physically (no masks, nothing to restore) and has no global scope or sequential mode."""
    ignored = {"masks": (masks, None), "apply": (apply, True), "scope": (scope, "layer"),
               "sequential": (sequential, None)}
    for arg, (got, default) in ignored.items():
        if got != default:
            shown = type(got).__name__ if arg == "masks" else repr(got)
            raise ValueError(f"{arg}={shown} does not apply to granularity 'channel' (channels "
                             f"are removed in place; it would be ignored): leave {arg} at "
                             f"{default!r} or use a weight-level granularity")


def _global_fine(scores: Dict[str, torch.Tensor], ratio: float) -> Masks:
    flat = torch.cat([s.flatten().float().cpu() for s in scores.values()])
    k = min(flat.numel(), int(round(ratio * flat.numel())))
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    if k:
        keep[torch.argsort(flat, stable=True)[:k]] = False
    out, start = {}, 0
    for name, s in scores.items():
        out[name] = keep[start:start + s.numel()].reshape(s.shape).to(s.device)
        start += s.numel()
    return out


def _sequential(model, modules, g, ratios, criterion, calib, masks, apply, config,
                progress, fast: bool = True) -> Masks:
    """Wanda or SparseGPT layer by layer in forward order (see sequential.py).

    Each layer's weight is copied (to the CPU) just before it is pruned; those copies are
    put back when anything raises mid-way (a later layer's Hessian holding NaN, Ctrl-C), so
    the model is left as it was, and also at the end when not ``apply``."""
    if criterion == "sparsegpt":
        if not isinstance(g, (Fine, NM, Block)):
            raise ValueError(f"criterion 'sparsegpt' supports granularities 'fine', 'N:M' and "
                             f"blocks, not {str(g)!r}")
        for name, m in modules.items():
            if getattr(m, "groups", 1) > 1:
                raise ValueError(f"layer {name!r} is a grouped Conv2d (groups={m.groups}); "
                                 f"criterion 'sparsegpt' needs one input matrix per layer: "
                                 f"exclude it (layers=...) or use 'wanda'")
    saved: Dict[str, torch.Tensor] = {}  # the weights pruned so far, as they were before
    groups, repeated = sequential.forward_groups(model, modules, calib)
    stat = sequential.hessian_stat() if criterion == "sparsegpt" else sequential.sq_norm_stat()
    from tqdm.auto import tqdm
    new: Masks = {}
    chain = None if repeated or not fast else sequential.find_chain(model, modules, calib)
    last_stats: Dict[str, object] = {}  # each layer's statistic (SparseGPT: rows counted)
    try:
        with inputs.eval_mode(model), torch.no_grad():
            done_block = -1
            for group in tqdm(groups, desc=criterion, disable=not progress, leave=False):
                runner = root = None
                if chain is not None:
                    i = chain.owner[group[0]]
                    while done_block < i - 1:  # blocks with nothing left to prune: advance
                        done_block += 1
                        chain.run_block(done_block, keep_outputs=True)
                    runner = lambda i=i: chain.run_block(i, keep_outputs=False)  # noqa: E731
                    root = chain.blocks[i]
                stats = sequential.collect(model, group, modules, calib, stat,
                                           stop_early=not repeated, runner=runner, root=root)
                last_stats.update(stats)
                for name in group:
                    saved[name] = modules[name].weight.detach().to("cpu", copy=True)
                    new[name] = _prune_one(modules[name], name, g, ratios[name], criterion,
                                           stats[name], masks, config)
    except BaseException:
        _restore(modules, saved)
        raise
    if not apply:
        _restore(modules, saved)
    if criterion == "sparsegpt":
        _warn_few_rows(modules, last_stats)
    return {n: new[n] for n in modules}


def _warn_few_rows(modules: Dict[str, nn.Module], stats: Dict[str, object]) -> None:
    """Warn when a layer's Hessian came from fewer input rows (tokens) than it has inputs: it
    is then rank-deficient, and SparseGPT's updates fit the calibration set rather than the
    inputs the model will see (MiniLM, 8 sentences: cosine to dense 0.977 on them, 0.736
    held out)."""
    few = [(n, s.rows, weight_matrix(modules[n]).shape[1]) for n, s in stats.items()
           if s.rows < weight_matrix(modules[n]).shape[1]]
    if few:
        shown = ", ".join(f"{n!r} ({r} rows for {k} inputs)" for n, r, k in few[:3])
        more = f" and {len(few) - 3} more" if len(few) > 3 else ""
        warnings.warn(f"criterion 'sparsegpt': calibration gave {len(few)} layer(s) fewer input "
                      f"rows (tokens) than inputs: {shown}{more}. Their weights are fit to the "
                      f"calibration data and generalize worse; give more calibration data "
                      f"(at least as many tokens as a layer's in_features)", stacklevel=3)


@torch.no_grad()
def _restore(modules: Dict[str, nn.Module], saved: Dict[str, torch.Tensor]) -> None:
    """Copy each saved weight (any device) back into its layer's weight, in place."""
    for n, w in saved.items():
        modules[n].weight.copy_(w)


@torch.no_grad()
def _prune_one(m, name, g, ratio, criterion, stat, masks, config) -> torch.Tensor:
    """Prune one layer in place from its statistic; returns its keep mask (weight's shape)."""
    prev = None
    if masks is not None and name in masks:
        prev = masks[name].to(device=m.weight.device, dtype=torch.bool)
    if criterion == "sparsegpt":
        W = weight_matrix(m)  # [out, K], a view (a Conv1D's weight transposed)
        forced = None if prev is None else ~to_matrix(m, prev)
        try:
            new_w, keep = sparsegpt.prune_matrix(W, stat.H, g, ratio, forced, config, name)
        except ValueError as e:  # name the layer (the Hessian's messages cannot)
            raise ValueError(f"layer {name!r}: {e}") from None
        W.copy_(new_w.to(W.dtype))
        return from_matrix(m, keep).contiguous()
    s = criteria.weight_scores("wanda", m, criteria.norms_from_sums(m, stat, name))
    if prev is not None:
        s = s.masked_fill(~prev, float("-inf"))
    keep = g.mask(m, to_matrix(m, s), ratio, name, criteria.group_reduction("wanda"),
                  per_row=True)
    keep = from_matrix(m, keep).contiguous()
    if prev is not None:
        keep = keep & prev
    m.weight.masked_fill_(~keep, 0.0)
    return keep
