"""Sparse layers and the model-level swap ``sparsify``."""
from __future__ import annotations

import logging
import math
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from . import functional
from ._packed_module import PackedWeightModule
from .conv import SparseConv2d
from .formats import SparseFormat, from_parts, to_sparse
from .formats.semi24 import Semi24

log = logging.getLogger("sparsekern")

#: The op (defined when sparsekern.ops is imported, through .functional above).
_SPMM = torch.ops.sparsekern.spmm

#: Largest stored fraction at which ``sparsify`` packs a layer as bsr / csc by default.
DEFAULT_MAX_DENSITY = {"bsr": 0.5, "csc": 0.3}


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
            if bias.shape != (self.out_features,):
                raise ValueError(f"bias has shape {list(bias.shape)}; expected "
                                 f"[{self.out_features}]")
            self.bias = nn.Parameter(bias.detach().clone())
        else:
            self.register_parameter("bias", None)

    @classmethod
    def from_dense(cls, linear: nn.Linear, layout: str = "2:4", blocksize=None) -> "SparseLinear":
        """Pack an nn.Linear whose weight is already pruned to ``layout``'s pattern."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
        W = linear.weight.detach()
        fmt = to_sparse(W, layout=layout, blocksize=blocksize)
        bias = None if linear.bias is None else linear.bias.detach()
        return cls(fmt, bias)

    @property
    def weight(self) -> SparseFormat:
        """The packed weight as a format object sharing this module's tensors."""
        return from_parts(self.layout, self.values, self.indices, self.offsets,
                          (self.out_features, self.in_features), validate=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        K = self.in_features
        if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[-1] != K:
            return functional.linear(x, self.weight, self.bias)  # raises the named error
        # The op directly (no format object per call): x rows are B's columns, as in linear.
        # Tensors straight from the module's dicts: nn.Module.__getattr__ costs ~0.5 us
        # each, a fifth of a small layer's call.
        params, buffers = self._parameters, self._buffers
        if x.dim() == 2:  # the common case: no reshapes (y is [M, N] column-major)
            return _SPMM(params["values"], buffers["indices"], buffers["offsets"],
                         self.out_features, K, self.layout, x.t(), params["bias"]).t()
        lead = x.shape[:-1]
        y = _SPMM(params["values"], buffers["indices"], buffers["offsets"], self.out_features,
                  K, self.layout, x.reshape(math.prod(lead), K).t(), params["bias"])
        return y.t().reshape(*lead, self.out_features)

    def to_dense(self) -> nn.Linear:
        """An equivalent dense nn.Linear."""
        lin = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                        device=self.values.device, dtype=self.values.dtype)
        with torch.no_grad():
            lin.weight.copy_(self.weight.to_dense())
            if self.bias is not None:
                lin.bias.copy_(self.bias)
        return lin

    def get_extra_state(self):
        return {"layout": self.layout, "shape": [self.out_features, self.in_features]}

    def set_extra_state(self, state):
        self.layout = state["layout"]
        self.out_features, self.in_features = (int(s) for s in state["shape"])

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"layout={self.layout!r}, nnz={self.values.numel()}, bias={self.bias is not None}")


def _is_semi24(W: torch.Tensor) -> bool:
    try:
        Semi24.from_dense(W)
    except ValueError:
        return False
    return True


def choose_layout(W: torch.Tensor, layout: str, blocksize=None,
                  max_density: Optional[float] = None) -> Tuple[Optional[str], str]:
    """Decide whether W [M, K] is packed, and how. Returns (layout or None, reason).

    ``"auto"``: the format that the latency table (sparsekern.auto; measured once on this
    machine for a Linear [M, K] at batch 1, cached on disk) predicts fastest for W's
    actual zeros — 2:4 when W is 2:4, BSR with ``blocksize`` (default (32, 32)), or CSC —
    and None (dense) when no format is predicted faster than dense.
    """
    if layout == "auto":
        from .auto.choose import decide_matrix
        d = decide_matrix(W, blocksize)
        return d.layout, d.reason
    if layout == "2:4":
        if _is_semi24(W):
            return "2:4", "weight is 2:4 sparse"
        return None, "weight is not 2:4 sparse"
    limit = DEFAULT_MAX_DENSITY[layout] if max_density is None else max_density
    fmt = to_sparse(W, layout=layout, blocksize=blocksize)
    stored = fmt.nnz / max(1, W.numel())
    if stored <= limit:
        return layout, f"stored fraction {stored:.2f} <= {limit}"
    return None, f"stored fraction {stored:.2f} > {limit}"


def sparsify(model: nn.Module, layout: str = "auto", blocksize=None,
             max_density: Optional[float] = None, *, example_input=None,
             latency_table=None, margin: Optional[float] = None) -> nn.Module:
    """Swap every nn.Linear / nn.Conv2d (groups=1) whose weight already has ``layout``'s
    pattern for a SparseLinear / SparseConv2d (a Conv2d weight is read as [out, in*kh*kw]).

    Args:
        model: any nn.Module; modified in place and returned.
        layout: ``"2:4"``, ``"bsr"``, ``"csc"`` or ``"auto"``: each Linear gets the format
            that the latency table predicts fastest for its actual zeros (2:4, BSR with a
            measured block shape, CSC), and stays dense when no format is predicted at
            least ``margin`` faster than dense at every measured shape (see
            sparsekern.auto). The table is measured on this machine once and cached on
            disk ($SPARSEKERN_CACHE or ~/.cache/sparsekern).
        blocksize: (bm, bk) for ``"bsr"``.
        max_density: for bsr/csc, pack only when the stored fraction is at most this.
        example_input: for ``"auto"``: the input(s) to measure at — a tensor, a tuple of
            model arguments, or a list of them (one per shape). Without it, each Linear is
            measured alone on a batch-1 input [1, in_features].
        latency_table: for ``"auto"``: a table from ``sparsekern.auto.build_table`` (layers
            it lacks are measured).
        margin: for ``"auto"``: required predicted gain over dense (default 0.05).
    Layers left dense are logged (logger "sparsekern") with the reason; the decisions are
    kept in ``model.sparsekern_report`` ({module name: (layout or "dense", reason)}), and
    for ``"auto"`` also in ``model.sparsekern_decisions`` (predicted times per format).
    """
    if layout not in ("auto", "2:4", "bsr", "csc"):
        raise ValueError(f"layout must be 'auto', '2:4', 'bsr' or 'csc'; got {layout!r}")
    if max_density is not None and not 0.0 <= max_density <= 1.0:
        raise ValueError(f"max_density must be in [0, 1], got {max_density!r}")
    if layout == "auto":
        from .auto.choose import DEFAULT_MARGIN, sparsify_auto
        if blocksize is not None or max_density is not None:
            raise ValueError(f"layout='auto' chooses the format (and block shape) from measured "
                             f"latencies; blocksize={blocksize!r} and max_density={max_density!r} "
                             f"apply only to layout='bsr'/'csc'")
        # Conv2d layers are measured at their real input shape, so they need example_input.
        linear_only = example_input is None and latency_table is None
        return sparsify_auto(model, latency_table, example_input, linear_only=linear_only,
                             margin=DEFAULT_MARGIN if margin is None else margin)
    if example_input is not None or latency_table is not None or margin is not None:
        raise ValueError(f"example_input, latency_table and margin apply to layout='auto' only; "
                         f"got layout={layout!r}")
    report: Dict[str, Tuple[str, str]] = {}
    targets = [(name, mod) for name, mod in model.named_modules()
               if type(mod) in (nn.Linear, nn.Conv2d)]
    for name, mod in targets:
        if isinstance(mod, nn.Conv2d) and mod.groups != 1:
            report[name] = ("dense", f"grouped Conv2d (groups={mod.groups}) is kept dense")
            log.info("sparsify: %s stays dense (groups=%d)", name, mod.groups)
            continue
        chosen, why = choose_layout(mod.weight.detach().flatten(1), layout, blocksize,
                                    max_density)
        report[name] = (chosen or "dense", why)
        if chosen is None:
            log.info("sparsify: %s stays dense (%s)", name, why)
            continue
        cls = SparseConv2d if isinstance(mod, nn.Conv2d) else SparseLinear
        new = cls.from_dense(mod, layout=chosen, blocksize=blocksize if chosen == "bsr" else None)
        if name == "":  # the model is itself a Linear / Conv2d
            new.sparsekern_report = report
            return new
        _set_submodule(model, name, new)
    model.sparsekern_report = report
    return model


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
