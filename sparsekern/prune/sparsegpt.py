"""SparseGPT (Frantar & Alistarh 2023): prune one layer and reconstruct its output.

For a layer with weight matrix W [out, K] and calibration inputs X [rows, K], the layer's
output error ||W X^T - Ŵ X^T||² is a quadratic in each row of Ŵ with Hessian H = X^T X.
Columns are visited left to right; when a weight is pruned (set to 0), the error it causes
is spread over the row's not-yet-visited columns through the upper Cholesky factor U of
H^-1 (OBS update ``W[:, j:] -= (w_j / U_jj) * U[j, j:]``). The mask is chosen adaptively
from the current (already updated) weights with the OBS saliency ``w² / U_jj²``:

- fine: in each block of ``blocksize`` columns every row prunes its share of the layer's
  ratio (cumulative rounding, so each row loses exactly ``round(ratio * K)`` weights);
- N:M: at the start of each group of M columns, each row prunes its M-N lowest;
- (bm, bk) blocks: at the start of each bk-wide column group, the lowest-saliency bm-row
  blocks of that group are pruned: as many as bring the weights removed so far closest to
  ``ratio`` times the weights visited so far (edge blocks counted by their real size), so
  the layer loses ``ratio`` of its weights as nearly as whole blocks allow (a UserWarning
  when that is more than 0.05 off).

Updates are lazy per block of ``blocksize`` columns (one matrix product per block carries
the block's errors to the columns after it). H is dampened by ``damp`` times its mean
diagonal. The result does not depend on the scale of X: H is summed from power-of-two
rescaled batches (:class:`HessianSum`) and rescaled by a power of 4 before the factorisation,
so activations of |x| ~1e-20 or ~1e20 give the masks and weights of |x| ~1 (float32 would
underflow or overflow X^T X). Memory: H and its factor, K x K float32, for one layer at a
time.
"""
from __future__ import annotations

import contextlib
import math
import numbers
from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from .granularity import NM, Block, Fine, Granularity, prefix_to_prune, warn_if_unreachable

DEFAULT_DAMP = 0.01
DEFAULT_BLOCKSIZE = 128


@dataclass(frozen=True)
class SparseGPTConfig:
    """``damp``: fraction of H's mean diagonal added to it (a finite float >= 0);
    ``blocksize``: columns per lazy update (an int >= 1, rounded down to a multiple of the
    N:M group or block width, at least one group). ValueError naming the field otherwise."""

    damp: float = DEFAULT_DAMP
    blocksize: int = DEFAULT_BLOCKSIZE

    def __post_init__(self):
        d, b = self.damp, self.blocksize
        # bool is an int: True would pass as 1 and hide a misplaced flag
        if isinstance(d, bool) or not isinstance(d, numbers.Real) or not math.isfinite(d) \
                or d < 0:
            raise ValueError(f"SparseGPTConfig: damp must be a finite number >= 0 (a fraction "
                             f"of the Hessian's mean diagonal, e.g. {DEFAULT_DAMP}), got {d!r}")
        if isinstance(b, bool) or not isinstance(b, numbers.Integral) or b < 1:
            raise ValueError(f"SparseGPTConfig: blocksize must be an int >= 1 (columns per lazy "
                             f"update, e.g. {DEFAULT_BLOCKSIZE}), got {b!r}")


def _cum(ratio: float, n: int) -> int:
    return min(n, int(round(ratio * n)))


#: Power-of-two exponents used to rescale, at most this far from 0: 2**±120 is a normal
#: float32 (float32 spans 2**-149 .. 2**128), and what is left of the scale is harmless.
_MAX_EXP = 120


def _pow2_exponent(m: float) -> int:
    """e with 2**(e-1) <= m < 2**e (math.frexp), clamped to ±_MAX_EXP; 0 for m 0 or not
    finite (NaN/Inf then reach the Hessian, where they are reported)."""
    if not (math.isfinite(m) and m > 0):
        return 0
    return max(-_MAX_EXP, min(_MAX_EXP, math.frexp(m)[1]))


class HessianSum:
    """H = X^T X of a layer's calibration inputs X [rows, K], summed over batches in float32
    without underflow or overflow (inputs of |x| ~1e-20 or ~1e20).

    Each batch is scaled by a power of two (exact) so its max-abs is below 1, and the sum is
    kept in the units of the largest batch so far: ``H`` (float32 [K, K]) is X^T X /
    4**``exp``. SparseGPT's result does not depend on H's scale (see
    :func:`inverse_hessian_factor`), so ``H`` is used as it is.
    """

    def __init__(self):
        self.H: Optional[torch.Tensor] = None
        self.exp: Optional[int] = None  # None until a batch with a nonzero input
        self.rows = 0  # input rows (tokens) summed so far

    def add(self, X: torch.Tensor) -> "HessianSum":
        """Add X^T X of one batch X [rows, K] (any float dtype); returns self."""
        X = X.float()
        self.rows += int(X.shape[0])
        if self.H is None:
            self.H = torch.zeros(X.shape[1], X.shape[1], dtype=X.dtype, device=X.device)
        m = float(X.abs().amax()) if X.numel() else 0.0
        if m == 0:  # nothing to add (NaN compares unequal: it reaches H and is reported)
            return self
        e = _pow2_exponent(m)
        if self.exp is None:
            self.exp = e
        elif e > self.exp:  # a larger batch: the sum so far into its units
            self.H.mul_(4.0 ** (self.exp - e) if e - self.exp <= _MAX_EXP // 2 else 0.0)
            self.exp = e
        X = X * 2.0 ** -self.exp
        self.H.addmm_(X.T, X)
        return self


def _normalized(H: torch.Tensor) -> torch.Tensor:
    """H (float32 [K, K], finite, diagonal >= 0) times a power of 4 (exact) that brings its
    mean diagonal near 1; the identity when the diagonal is all 0 (every input always 0)."""
    mean = float(H.diagonal().mean())
    if mean == 0:
        return torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    k = _pow2_exponent(mean) // 2
    return H * 4.0 ** -k


def inverse_hessian_factor(H: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor U (float32 [K, K]) of (H' + damp*mean(diag H')*I)^-1, where H'
    is H (any positive multiple of X^T X, [K, K]) rescaled by a power of 4 so that its mean
    diagonal is near 1.

    SparseGPT is invariant to H's scale: H scaled by c scales U by 1/sqrt(c), and the
    saliencies w²/U_jj² (the mask) and the updates (w_j/U_jj) * U[j, j:] (the weights) do not
    change; the damping is relative to the mean diagonal. The power-of-4 rescale is exact
    (the result is bit-identical at any scale float32 represents without subnormals) and
    keeps U and w²/U_jj² in float32's range for a tiny or huge H.

    float32 as in the reference implementation: the damping keeps H well conditioned, and
    a factorisation that fails is retried with 10x the damping.

    Columns with a zero diagonal (inputs that are always 0) keep only the damping on it
    (before: a diagonal of 1, which depended on X's scale): their weights are cheap to prune
    (saliency w² times the damping) and move nothing else; an all-zero H becomes the identity.
    """
    H = H.float()
    if not bool(torch.isfinite(H).all()):
        raise ValueError(f"the calibration Hessian ({H.shape[0]}x{H.shape[0]}) holds NaN or Inf: "
                         f"the layer's calibration inputs hold NaN or Inf; check the "
                         f"calibration data (calib)")
    H = _normalized(H)
    mean = float(H.diagonal().mean())
    eye = torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    for attempt in range(6):  # a singular H from few samples: dampen harder
        try:
            L = torch.linalg.cholesky(H + (damp * 10 ** attempt) * mean * eye)
            Hinv = torch.cholesky_inverse(L)
            return torch.linalg.cholesky(Hinv, upper=True).float()
        except RuntimeError:  # torch.linalg.LinAlgError subclasses RuntimeError
            continue
    hint = " or a damp > 0 (SparseGPTConfig)" if damp == 0 else ""  # 0: retries add nothing
    raise ValueError(f"the calibration Hessian ({H.shape[0]}x{H.shape[0]}) is not positive "
                     f"definite even with damping {damp * 1e5:g}; give more calibration "
                     f"data{hint}")


def _fine_block(S: torch.Tensor, n_prune: int, forced: torch.Tensor) -> torch.Tensor:
    """Bool [out, w]: True at each row's n_prune lowest saliencies, and at forced ones."""
    pruned = forced.clone()
    if n_prune > 0:
        idx = torch.topk(S.masked_fill(forced, float("-inf")), n_prune, dim=1,
                         largest=False).indices
        pruned.scatter_(1, idx, True)
    return pruned


def _nm_group(S: torch.Tensor, n: int, forced: torch.Tensor) -> torch.Tensor:
    """Bool [out, w<=m]: each row prunes all but its n highest (w - n weights)."""
    k = S.shape[1] - n
    return _fine_block(S, max(0, k), forced)


def _block_group(S: torch.Tensor, bm: int, target: float, forced: torch.Tensor,
                 spare_one: bool = False) -> torch.Tensor:
    """Bool [out, w]: whole bm-row blocks of this column group, the lowest by mean saliency,
    whose weights come closest to ``target`` (ties: fewer); blocks holding a forced weight
    are always pruned (and counted first). ``spare_one``: keep at least one block unless all
    are forced (the last group of a layer whose other groups went whole, ratio < 1)."""
    out, w = S.shape
    mb = -(-out // bm)
    pad = mb * bm - out
    vals = torch.nn.functional.pad(S.masked_fill(forced, 0.0), (0, 0, 0, pad))
    real = torch.nn.functional.pad(torch.ones_like(S), (0, 0, 0, pad))
    sizes = real.reshape(mb, -1).sum(1)
    scores = vals.reshape(mb, -1).sum(1) / sizes
    must = torch.nn.functional.pad(forced, (0, 0, 0, pad)).reshape(mb, -1).any(1)
    order = torch.argsort(scores.masked_fill(must, float("-inf")), stable=True)
    chosen = must.clone()
    chosen[order[:prefix_to_prune(sizes[order], target, spare_one)]] = True
    return chosen.repeat_interleave(bm)[:out].unsqueeze(1).expand(out, w).clone()


def _step(g: Granularity) -> int:
    if isinstance(g, NM):
        return g.m
    if isinstance(g, Block):
        return g.bk
    return 1


@contextlib.contextmanager
def _one_thread(device: torch.device):
    """CPU: the column loop is thousands of tiny ops, which OpenMP slows down (tens of times
    on a loaded machine); one thread is faster. The caller's thread count comes back."""
    if device.type != "cpu":
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@torch.no_grad()
def prune_matrix(W: torch.Tensor, H: torch.Tensor, g: Granularity, ratio: float,
                 forced: Optional[torch.Tensor] = None,
                 config: SparseGPTConfig = SparseGPTConfig(),
                 name: Optional[str] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT on one weight matrix.

    Args:
        W: [out, K] weights (any float dtype, any device; not modified).
        H: [K, K] X^T X of the layer's calibration inputs (same device), or any positive
            multiple of it such as :attr:`HessianSum.H` (the result does not depend on it).
        g: Fine, NM or Block granularity.
        ratio: fraction removed (for NM its fixed 1 - N/M is used).
        forced: optional bool [out, K], True = must be pruned (an earlier round's zeros).
        config: damping and lazy block size.
        name: the layer's name, for the warning when whole blocks miss ``ratio`` by more
            than 0.05 (the matrix's shape names it otherwise).
    Returns:
        (new weights [out, K] float32 with pruned entries exactly 0, keep mask bool [out, K]).
    """
    if not isinstance(g, (Fine, NM, Block)):
        raise ValueError(f"criterion 'sparsegpt' supports granularities 'fine', 'N:M' and "
                         f"blocks, got {g}")
    with _one_thread(W.device):
        new_w, keep = _prune_matrix(W, H, g, ratio, forced, config)
    if isinstance(g, Block):
        where = f"layer {name!r} ({W.shape[0]}x{W.shape[1]})" if name is not None else \
            f"a {W.shape[0]}x{W.shape[1]} weight"
        warn_if_unreachable(where, ratio, 1.0 - float(keep.float().mean()), g.name)
    return new_w, keep


def _prune_matrix(W, H, g, ratio, forced, config):
    out, K = W.shape
    W = W.detach().float().clone()
    U = inverse_hessian_factor(H.to(W.device), config.damp)
    forced = (torch.zeros_like(W, dtype=torch.bool) if forced is None
              else forced.to(device=W.device, dtype=torch.bool))
    step = _step(g)
    bs = max(step, config.blocksize // step * step)
    pruned = torch.zeros_like(W, dtype=torch.bool)
    removed = 0  # blocks: weights pruned so far, kept near ratio * the weights visited
    for i1 in range(0, K, bs):
        i2 = min(i1 + bs, K)
        W1 = W[:, i1:i2].clone()
        U1 = U[i1:i2, i1:i2]
        d = U1.diagonal()
        Err1 = torch.zeros_like(W1)
        P1 = pruned[:, i1:i2]
        if isinstance(g, Fine):
            P1.copy_(_fine_block(W1 ** 2 / d ** 2, _cum(ratio, i2) - _cum(ratio, i1),
                                 forced[:, i1:i2]))
        for i in range(i2 - i1):
            if not isinstance(g, Fine) and i % step == 0:
                j = min(i + step, i2 - i1)
                S = W1[:, i:j] ** 2 / d[i:j] ** 2
                F = forced[:, i1 + i:i1 + j]
                if isinstance(g, NM):
                    P1[:, i:j] = _nm_group(S, g.n, F)
                else:
                    target = ratio * out * (i1 + j) - removed
                    # a ratio below 1 never zeroes the whole layer
                    whole = ratio < 1 and i1 + j == K and removed == out * (i1 + i)
                    P1[:, i:j] = _block_group(S, g.bm, target, F, spare_one=whole)
                    removed += int(P1[:, i:j].sum())
            w = W1[:, i]
            err = torch.where(P1[:, i], w, torch.zeros_like(w)) / d[i]
            W1[:, i:] -= err.unsqueeze(1) * U1[i, i:].unsqueeze(0)
            W1[:, i].masked_fill_(P1[:, i], 0.0)
            Err1[:, i] = err
        W[:, i1:i2] = W1
        if i2 < K:
            W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    W.masked_fill_(pruned, 0.0)
    return W, ~pruned
