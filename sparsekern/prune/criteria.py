"""Criteria: how important each weight, group or channel is (larger = keep).

Weight-level criteria (for fine, N:M, block and kernel granularity):
    "l1"     |W|; a group scores the mean of |W| (its L1 norm over its size).
    "l2"     |W|; a group scores the root-mean-square of W (its L2 norm over sqrt(size)).
    "wanda"  |W_ij| * ||X_j||_2 with X_j the j-th input column over the calibration batches
             (Wang et al., Wanda); fine granularity then compares weights within each output
             row, as the paper does (and N:M within each group of M). With ``sequential``
             (the default) each layer's norms come from the model with the layers before it
             already pruned, as in the reference implementation.
    "sparsegpt"  not a score: the masked weights are chosen by OBS saliency w^2/[H^-1]_jj and
             the kept weights updated to reconstruct the layer's output from the inverse
             Hessian of its calibration inputs (Frantar & Alistarh; see sparsegpt.py),
             layer by layer in forward order (see sequential.py).
Channel criteria (for granularity "channel", see channel.py):
    "l1" / "l2"  norm of each output channel's weights.
    "bn_scale"   |gamma| of the BatchNorm that follows the layer (network slimming; train
                 with :func:`bn_l1_penalty` to push unneeded gammas to zero).
    "apoz"       1 - average percentage of zeros of the channel's activation (Hu et al.),
                 measured on calibration batches.
    "regression" the channels that best reconstruct the consuming layer's output on
                 calibration data (greedy least squares), whose kept weights are then refit
                 by least squares (He et al. / ThiNet style).
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .. import _layers, inputs
from . import calibration
from ..conv import same_padding
from .layers import from_matrix, in_features, weight_matrix

WEIGHT_CRITERIA = ("l1", "l2", "wanda", "sparsegpt")
CHANNEL_CRITERIA = ("l1", "l2", "bn_scale", "apoz", "regression")
CRITERIA = ("l1", "l2", "wanda", "sparsegpt", "bn_scale", "apoz", "regression")
NEEDS_CALIB = ("wanda", "sparsegpt", "apoz", "regression")


def check_criterion(criterion, channel: bool) -> str:
    """Validate a criterion name against the granularity kind; returns it."""
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; expected one of {list(CRITERIA)}")
    allowed = CHANNEL_CRITERIA if channel else WEIGHT_CRITERIA
    if criterion not in allowed:
        kind = "granularity 'channel'" if channel else "weight-level granularities (fine, N:M, " \
                                                        "block, kernel)"
        raise ValueError(f"criterion {criterion!r} does not apply to {kind}; use one of "
                         f"{list(allowed)}")
    return criterion


def group_reduction(criterion: str) -> str:
    return "rms" if criterion == "l2" else "mean"


# -- weight-level scores ---------------------------------------------------------------

def weight_scores(criterion: str, module: nn.Module,
                  input_norms: torch.Tensor = None) -> torch.Tensor:
    """Element scores of ``module.weight`` (same shape, float32, >= 0)."""
    W = weight_matrix(module).detach().float().abs()  # [out, K] (a Conv1D's weight transposed)
    if criterion in ("l1", "l2"):
        return from_matrix(module, W)
    if criterion == "wanda":
        if input_norms is None:
            raise ValueError("criterion 'wanda' needs calibration data (calib=...)")
        return from_matrix(module, W * input_norms.to(W.device))
    raise ValueError(f"criterion {criterion!r} has no weight-level score")


def im2col(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """The columns a Conv2d multiplies: [N, in_channels*kh*kw, L], padded as the conv pads
    (zeros, or its padding_mode: reflect, replicate, circular)."""
    if x.dim() == 3:
        x = x.unsqueeze(0)
    padding = conv.padding
    if conv.padding_mode != "zeros":  # as nn.Conv2d.forward: pad first, then no padding
        x = F.pad(x, conv._reversed_padding_repeated_twice, mode=conv.padding_mode)
        padding = 0
    elif padding == "same":
        x = F.pad(x, same_padding(conv.kernel_size, conv.dilation))
        padding = 0
    elif padding == "valid":
        padding = 0
    return F.unfold(x, conv.kernel_size, dilation=conv.dilation, padding=padding,
                    stride=conv.stride)


def layer_input_matrix(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as rows of its weight matrix's K columns: [rows, in*kh*kw or in].

    A nested tensor (nn.TransformerEncoder in eval mode turns a batch with a padding mask
    into one) gives the rows of its sequences, which hold the real tokens only."""
    if getattr(x, "is_nested", False):
        parts = x.unbind()
        if isinstance(module, nn.Conv2d) or any(p.shape[-1] != in_features(module)
                                                for p in parts):
            raise ValueError(f"its input is a nested tensor of sequences shaped "
                             f"{[list(p.shape) for p in parts][:4]}; expected [..., "
                             f"{in_features(module)}] each")
        return torch.cat([p.reshape(-1, p.shape[-1]) for p in parts])
    if isinstance(module, nn.Conv2d):
        if x.dim() not in (3, 4) or x.shape[-3] != module.in_channels:
            raise ValueError(f"its input has shape {list(x.shape)}; expected [N, "
                             f"{module.in_channels}, H, W]")
        cols = im2col(module, x)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    if x.dim() < 1 or x.shape[-1] != in_features(module):
        raise ValueError(f"its input has shape {list(x.shape)}; expected [..., "
                         f"{in_features(module)}]")
    return inputs.real_token_rows(x)  # a padded batch: its real tokens only


def input_column_norms(model: nn.Module, modules: Dict[str, nn.Module],
                       calib) -> Dict[str, torch.Tensor]:
    """||X_j||_2 of every input column j of each layer over the calibration batches.

    Returns {name: [out, K] or [K] float32}: K columns of the layer's weight matrix
    (grouped convs get one row per output, holding its group's columns).
    """
    sums: Dict[str, torch.Tensor] = {}
    rows: Dict[str, int] = {}

    def hook(name, mod, args):
        X = layer_input_matrix(mod, args[0].detach()).double()
        s = (X * X).sum(0)
        sums[name] = s if name not in sums else sums[name] + s
        rows[name] = rows.get(name, 0) + X.shape[0]

    handles = [m.register_forward_pre_hook(lambda mod, args, n=n: hook(n, mod, args))
               for n, m in modules.items()]
    try:
        calibration.run(model, calib)
    finally:
        for h in handles:
            h.remove()
    out = {}
    for name, m in modules.items():
        if name not in sums:
            raise ValueError(f"layer {name!r} was never called on the calibration data, so "
                             f"criterion 'wanda' cannot score it")
        if rows[name] == 0:
            raise no_tokens_error(name)
        out[name] = norms_from_sums(m, sums[name], name)
    return out


def no_tokens_error(name: str) -> ValueError:
    """The error for a layer whose calibration inputs were all padding."""
    return ValueError(f"layer {name!r} saw no real token in the calibration data: every row of "
                      f"its inputs was padding (is the attention_mask all 0, or inverted?), so "
                      f"its calibration statistics are empty")


def norms_from_sums(module: nn.Module, sums: torch.Tensor, name: str = "") -> torch.Tensor:
    """||X_j||_2 from the sums of squares [K'] of a layer's input columns: [K] float32, or
    [out, K] for a grouped Conv2d (each output row holds its group's columns). Raises when a
    sum is NaN or Inf (the scores would be arbitrary: NaN sorts as the largest)."""
    bad = ~torch.isfinite(sums)
    if bool(bad.any()):
        j = int(bad.nonzero()[0, 0])
        raise ValueError(f"layer {name!r}: its calibration inputs hold NaN or Inf (input column "
                         f"{j}, among {int(bad.sum())} such columns), so criterion 'wanda' "
                         f"cannot score its weights; check the calibration data (calib) or the "
                         f"layers before this one")
    norms = sums.sqrt().float()
    groups = getattr(module, "groups", 1)
    if groups > 1:
        per_group = norms.reshape(groups, -1)
        norms = per_group.repeat_interleave(module.out_channels // groups, 0)
    return norms


# -- channel-level scores ----------------------------------------------------------------

def channel_norms(module: nn.Module, criterion: str) -> torch.Tensor:
    """[out] L1 or L2 norm of each output channel's weights (float64)."""
    W = _layers.flat2d(module.weight.detach().double())
    return W.abs().sum(1) if criterion == "l1" else W.norm(dim=1)


def channel_zero_fraction(t: torch.Tensor, dim: int, inner: int, channels: int) -> Tuple[
        torch.Tensor, int]:
    """(zeros per channel [channels] float64, values per channel) of activation ``t``.

    Channel c occupies indices [c*inner, (c+1)*inner) of dimension ``dim``.
    """
    v = t.detach().movedim(dim, -1).reshape(-1, channels, inner)
    zeros = (v == 0).double().sum((0, 2))
    return zeros, v.shape[0] * inner


def bn_l1_penalty(model: nn.Module, strength: float = 1e-4) -> torch.Tensor:
    """``strength * sum |gamma|`` over every BatchNorm of ``model`` (network slimming).

    Add it to the training loss so that channels the model does not need get gammas near
    zero, then prune with ``criterion="bn_scale"``.
    """
    terms = [m.weight.abs().sum() for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None]
    if not terms:
        raise ValueError(f"model {type(model).__name__} has no BatchNorm with an affine weight "
                         f"(gamma); bn_l1_penalty needs one")
    return strength * torch.stack(terms).sum()


# -- regression-based channel selection ----------------------------------------------------

#: Upper bound on rows*out of the contributions kept in memory (subsample rows beyond).
_REGRESSION_MAX_ELEMENTS = 1 << 22


#: The refit's pull toward the kept weights, relative to the mean input energy per column.
_REFIT_PRIOR = 1e-4


def _ridge(G: torch.Tensor) -> torch.Tensor:
    lam = 1e-8 * (G.diagonal().mean().clamp_min(1e-30))
    return G + lam * torch.eye(G.shape[0], dtype=G.dtype, device=G.device)


def regression_select(X: torch.Tensor, W: torch.Tensor, group: int, n_keep: int,
                      max_elements: int = _REGRESSION_MAX_ELEMENTS
                      ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Choose ``n_keep`` input channels of a layer and refit its weights by least squares.

    Args:
        X: [R, C*group] the layer's input matrix on calibration data (rows = samples or
           pixels); channel c owns columns [c*group, (c+1)*group).
        W: [out, C*group] the layer's weight matrix.
        group: columns per channel (kh*kw for a Conv2d, the flattened H*W for a Linear after
           a flatten, 1 for a Linear).
        n_keep: channels to keep (1 <= n_keep <= C).
    Returns:
        (kept channel indices [n_keep] int64, increasing; refit weight [out, n_keep*group] in
        W's dtype) minimizing ||X W.T - X_S W_S.T|| over the calibration rows.
    Greedy forward selection: each step adds the channel whose contribution, with all chosen
    contributions rescaled by least squares, best reconstructs the output.
    """
    X = X.double()
    Wd = W.detach().double()
    R, Kc = X.shape
    out = Wd.shape[0]
    C = Kc // group
    if C * R * out > max_elements:  # keep the contributions Z [C, R*out] bounded
        X = X[::-(-(C * R * out) // max_elements)]
        R = X.shape[0]
    Y = X @ Wd.t()  # [R, out]
    Xg = X.reshape(R, C, group)
    Wg = Wd.reshape(out, C, group)
    Z = torch.einsum("rcg,ocg->cro", Xg, Wg).reshape(C, R * out)  # per-channel contribution
    G = Z @ Z.t()
    b = Z @ Y.reshape(-1)
    chosen = []
    free = torch.ones(C, dtype=torch.bool)
    diag = _ridge(G).diagonal()
    for _ in range(n_keep):
        # Gain of adding channel c to the chosen set S (least squares on S + c), for all c at
        # once: (b_c - G_cS G_SS^-1 b_S)^2 / (G_cc - G_cS G_SS^-1 G_Sc), the Schur complement.
        if chosen:
            S = torch.tensor(chosen)
            A = torch.linalg.solve(_ridge(G[S][:, S]), G[S]).t()  # [C, |S|] = G_cS G_SS^-1
            resid = b - A @ b[S]
            denom = diag - (A * G[:, S]).sum(1)
        else:
            resid, denom = b, diag
        gain = resid.square() / denom.clamp_min(1e-300)
        gain[~free] = float("-inf")
        best = int(torch.argmax(gain))
        chosen.append(best)
        free[best] = False
    kept = torch.tensor(sorted(chosen), dtype=torch.long)
    cols = (kept.view(-1, 1) * group + torch.arange(group).view(1, -1)).reshape(-1)
    XS = X[:, cols]
    A = XS.t() @ XS
    # Ridge toward the kept weights, not toward 0: with fewer calibration rows than kept
    # columns the least-squares refit is underdetermined, and its arbitrary null-space part
    # changed the output on new inputs (4.8% with 32 rows for 96 columns, where dropping
    # dead channels loses nothing). Directions the data fix move; the others stay W_S.
    WS = Wd[:, cols]
    lam = _REFIT_PRIOR * float(A.diagonal().mean()) + 1e-30
    A = A + lam * torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
    W_new = torch.linalg.solve(A, XS.t() @ Y + lam * WS.t()).t()  # [out, n_keep*group]
    return kept, W_new.to(W.dtype)
