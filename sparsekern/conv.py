"""SparseConv2d: a Conv2d whose packed weight [out, in*kh*kw] runs through sparsekern::spmm.

A 1x1 convolution is a plain spmm over the pixels; a kh x kw convolution first unrolls the
input with ``torch.nn.functional.unfold`` (im2col: [N, C*kh*kw, L]) and multiplies the
packed weight with those columns. The flattening order of the weight (C, kh, kw) is the
order unfold uses, so ``conv.weight.reshape(out, -1)`` is the matrix to pack.
"""
from __future__ import annotations

import numbers
import operator
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from . import _layers
from ._packed_module import (PackedWeightModule, check_bias, decode_extra_state, encode_extra_state,
                             outside_inference_mode)
from .formats import SparseFormat, from_parts, to_sparse
from .functional import _check_not_fx_proxy, check_input, weight_only_bias
from .ops import spmm_op

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _pair(v, name: str, low: int = 0) -> Tuple[int, int]:
    """(a, b) from an int or a pair of ints, each >= ``low``."""
    pair = (v, v) if isinstance(v, int) and not isinstance(v, bool) else v
    try:
        if isinstance(pair, (str, bytes)) or any(isinstance(x, bool) for x in pair):
            raise TypeError
        a, b = (operator.index(x) for x in pair)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}") from None
    if a < low or b < low:
        raise ValueError(f"{name} must be >= {low}, got {v!r}")
    return a, b


def check_geometry(kernel_size, stride, padding, dilation, padding_mode: str = "zeros",
                   groups: int = 1) -> None:
    """Raise ValueError (naming the argument) unless this is a geometry SparseConv2d runs:
    kernel_size, stride, dilation >= 1, padding >= 0 / 'same' (stride 1) / 'valid', a
    padding_mode of nn.Conv2d, groups 1."""
    _pair(kernel_size, "kernel_size", 1)
    s = _pair(stride, "stride", 1)
    _pair(dilation, "dilation", 1)
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be an int, a pair, 'same' or 'valid'; got "
                             f"{padding!r}")
        if padding == "same" and s != (1, 1):
            raise ValueError(f"padding='same' needs stride 1, got stride={s}")
    else:
        _pair(padding, "padding", 0)
    if padding_mode not in _PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}")
    if isinstance(groups, bool) or groups != 1:
        raise ValueError(f"SparseConv2d supports groups=1 only, got groups={groups!r}")


def same_padding(kernel_size, dilation) -> Tuple[int, int, int, int]:
    """(left, right, top, bottom) padding of ``padding='same'`` (stride 1), as torch pads it."""
    pads = []
    for k, d in zip(reversed(kernel_size), reversed(dilation)):
        total = d * (k - 1)
        pads += [total // 2, total - total // 2]
    return tuple(pads)


class SparseConv2d(PackedWeightModule):
    """``y = conv2d(x, W) + bias`` with W [out_channels, in_channels, kh, kw] held sparse.

    The weight is stored as a packed matrix of shape [out_channels, in_channels*kh*kw]
    (sparsekern.formats). Supports stride, padding (ints, pairs, ``'same'``, ``'valid'``),
    every padding_mode of nn.Conv2d, dilation and bias; groups must be 1.

    Parameters / buffers (all in ``state_dict``, loadable with ``weights_only=True``):
        values:  nn.Parameter, the format's values (trainable on the fixed pattern).
        indices, offsets: buffers, the format's index tensors.
        bias:    nn.Parameter [out_channels] or None.
    Layout, shapes and geometry travel as the module's extra state (ints and strings).

    Input x: [N, in_channels, H, W] or [in_channels, H, W], float (the values' dtype, or
    float32 with half-precision values). Output: [N, out_channels, Ho, Wo] (contiguous).
    """

    def __init__(self, weight: SparseFormat, in_channels: int, kernel_size, stride=1,
                 padding=0, dilation=1, bias: Optional[torch.Tensor] = None,
                 padding_mode: str = "zeros"):
        super().__init__()
        if not isinstance(weight, SparseFormat):
            raise TypeError(f"weight must be a packed sparse matrix (sparsekern.to_sparse), got "
                            f"{type(weight).__name__}")
        check_geometry(kernel_size, stride, padding, dilation, padding_mode)
        if isinstance(in_channels, bool) or not isinstance(in_channels, numbers.Integral):
            raise TypeError(f"in_channels must be a positive int, got "
                            f"{type(in_channels).__name__} {in_channels!r}")
        if in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
        self.in_channels = int(in_channels)
        self.kernel_size = _pair(kernel_size, "kernel_size", 1)
        self.stride = _pair(stride, "stride", 1)
        self.dilation = _pair(dilation, "dilation", 1)
        self.padding = padding if isinstance(padding, str) else _pair(padding, "padding")
        self.padding_mode = padding_mode
        M, K = weight.shape
        kh, kw = self.kernel_size
        if K != self.in_channels * kh * kw:
            raise ValueError(f"weight has shape [{M}, {K}]; expected [out_channels, "
                             f"in_channels*kh*kw] = [{M}, {self.in_channels * kh * kw}] for "
                             f"in_channels={self.in_channels}, kernel_size={self.kernel_size}")
        self.out_channels = M
        self.layout = weight.layout
        self.values = nn.Parameter(weight.values, requires_grad=weight.values.is_floating_point())
        self.register_buffer("indices", weight.indices)
        self.register_buffer("offsets", weight.offsets)
        if bias is not None:
            check_bias(bias, M, weight.values)
            self.bias = nn.Parameter(bias.detach().clone())
        else:
            self.register_parameter("bias", None)

    # -- construction ---------------------------------------------------------------
    @classmethod
    @outside_inference_mode
    def from_dense(cls, conv: nn.Conv2d, layout: str = "2:4", blocksize=None) -> "SparseConv2d":
        """Pack an nn.Conv2d whose weight is already pruned to ``layout``'s pattern.

        The pattern is checked on the matrix ``conv.weight.reshape(out, in*kh*kw)``.
        Raises ValueError for groups != 1 (grouped and depthwise convs stay dense).
        """
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"conv must be an nn.Conv2d, got {type(conv).__name__}")
        if conv.groups != 1:
            raise ValueError(f"SparseConv2d supports groups=1 only; this Conv2d has groups="
                             f"{conv.groups} (keep grouped/depthwise convs dense)")
        W = conv.weight.detach()
        fmt = to_sparse(_layers.flat2d(W), layout=layout, blocksize=blocksize)
        bias = None if conv.bias is None else conv.bias.detach()
        return cls(fmt, conv.in_channels, conv.kernel_size, conv.stride, conv.padding,
                   conv.dilation, bias, conv.padding_mode).trainable_like(conv)

    @property
    def weight(self) -> SparseFormat:
        """The packed weight [out_channels, in_channels*kh*kw], sharing this module's tensors."""
        return from_parts(self.layout, self.values, self.indices, self.offsets,
                          (self.out_channels, self.in_channels * self.kernel_size[0] *
                           self.kernel_size[1]), validate=False)

    def to_dense(self) -> nn.Conv2d:
        """An equivalent dense nn.Conv2d."""
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride,
                         self.padding, self.dilation, 1, self.bias is not None,
                         self.padding_mode, device=self.values.device, dtype=self.values.dtype)
        with torch.no_grad():
            conv.weight.copy_(self.weight.to_dense().reshape(conv.weight.shape))
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv

    # -- forward --------------------------------------------------------------------
    def _explicit_padding(self):
        """(left, right, top, bottom) to apply with F.pad, or None when unfold pads zeros."""
        if self.padding == "valid":
            return None
        if self.padding == "same":
            pads = same_padding(self.kernel_size, self.dilation)
        elif self.padding_mode == "zeros":
            return None
        else:
            ph, pw = self.padding
            pads = (pw, pw, ph, ph)
        return pads if any(pads) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_not_fx_proxy(x, "x")  # before any check that reads its shape
        unbatched = x.dim() == 3
        if unbatched:
            x = x.unsqueeze(0)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            shape = list(x.squeeze(0).shape if unbatched else x.shape)
            raise ValueError(f"x has shape {shape}; expected [N, {self.in_channels}, H, W]"
                             f" or [{self.in_channels}, H, W] for {self.describe()}")
        check_input(x, self.values)
        pads = self._explicit_padding()
        if pads is not None:
            mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
            x = F.pad(x, pads, mode=mode)
            unfold_pad = (0, 0)
        else:
            unfold_pad = (0, 0) if isinstance(self.padding, str) else self.padding
        N, C, H, W = x.shape
        kh, kw = self.kernel_size
        sh, sw = self.stride
        dh, dw = self.dilation
        Ho = (H + 2 * unfold_pad[0] - dh * (kh - 1) - 1) // sh + 1
        Wo = (W + 2 * unfold_pad[1] - dw * (kw - 1) - 1) // sw + 1
        if Ho <= 0 or Wo <= 0:
            raise ValueError(f"x has shape {list(x.shape)}: too small for kernel_size "
                             f"{self.kernel_size} with dilation {self.dilation} and padding "
                             f"{self.padding} of {self.describe()}")
        if (kh, kw) == (1, 1) and unfold_pad == (0, 0):
            # 1x1: the pixels are the columns already (strided pixels for stride > 1).
            cols = x[:, :, ::sh, ::sw].reshape(N, C, Ho * Wo)
        else:
            cols = F.unfold(x, (kh, kw), dilation=(dh, dw), padding=unfold_pad, stride=(sh, sw))
        L = Ho * Wo
        # B [C*kh*kw, N*L]: one column per output pixel of every sample. The same ops for
        # every N (torch.jit.trace freezes Python branches on N): at N=1 the reshape is a view.
        B = cols.transpose(0, 1).reshape(cols.shape[1], N * L)
        bias = weight_only_bias(self.bias, B.dtype, self.values.dtype)
        Y = spmm_op(*self.weight.op_args(), B, bias)  # [out, N*L]
        out = Y.reshape(self.out_channels, N, Ho, Wo).permute(1, 0, 2, 3)
        if torch.compiler.is_compiling():
            # Always a copy, never a view: at N=1 .contiguous() is a no-op and leaves the
            # permuted view of Y as a graph node, and Inductor (2.13) fails to order its
            # strides symbolically when it lays a following Conv2d out channels-last with
            # dynamic shapes ("cannot determine truth value of Relational").
            out = out.clone(memory_format=torch.contiguous_format)
        else:
            out = out.contiguous()  # a copy for N > 1; at N=1 Y's memory is the output's
        return out.squeeze(0) if unbatched else out

    def describe(self) -> str:
        """This layer in one line, for error messages (its repr)."""
        return f"{type(self).__name__}({self.extra_repr()})"

    # -- state ----------------------------------------------------------------------
    def get_extra_state(self) -> torch.Tensor:
        """uint8 [n]: the JSON of the geometry dict below (a tensor, so that a state_dict
        holds tensors only); :meth:`geometry` gives the dict."""
        return encode_extra_state(self.geometry())

    def geometry(self) -> dict:
        """{"layout", "out_channels", "in_channels", "kernel_size", "stride", "dilation",
        "padding", "padding_mode"}: what a state_dict needs besides the tensors."""
        return {"layout": self.layout, "out_channels": self.out_channels,
                "in_channels": self.in_channels, "kernel_size": list(self.kernel_size),
                "stride": list(self.stride), "dilation": list(self.dilation),
                "padding": self.padding if isinstance(self.padding, str) else list(self.padding),
                "padding_mode": self.padding_mode}

    def check_extra_state(self, state) -> Tuple[int, int]:
        """Raise unless ``state`` (from get_extra_state) is a valid geometry; returns the
        packed matrix's shape (out_channels, in_channels*kh*kw)."""
        state = decode_extra_state(state)
        missing = [k for k in ("layout", "out_channels", "in_channels", "kernel_size",
                               "stride", "dilation", "padding", "padding_mode") if k not in state]
        if missing:
            raise ValueError(f"extra state lacks {missing}")
        check_geometry(state["kernel_size"], state["stride"], state["padding"],
                       state["dilation"], state["padding_mode"], state.get("groups", 1))
        kh, kw = _pair(state["kernel_size"], "kernel_size", 1)
        out = _pair((state["out_channels"],) * 2, "out_channels", 1)[0]
        cin = _pair((state["in_channels"],) * 2, "in_channels", 1)[0]
        return out, cin * kh * kw

    def fixed_geometry(self, state) -> Dict[str, object]:
        self.check_extra_state(state)
        p = state["padding"]
        return {"out_channels": int(state["out_channels"]),
                "in_channels": int(state["in_channels"]),
                "kernel_size": _pair(state["kernel_size"], "kernel_size", 1),
                "stride": _pair(state["stride"], "stride", 1),
                "dilation": _pair(state["dilation"], "dilation", 1),
                "padding": p if isinstance(p, str) else _pair(p, "padding"),
                "padding_mode": state["padding_mode"]}

    def set_extra_state(self, state):
        state = decode_extra_state(state)
        self.check_extra_state(state)
        self.layout = state["layout"]
        self.out_channels = int(state["out_channels"])
        self.in_channels = int(state["in_channels"])
        self.kernel_size = _pair(state["kernel_size"], "kernel_size", 1)
        self.stride = _pair(state["stride"], "stride", 1)
        self.dilation = _pair(state["dilation"], "dilation", 1)
        p = state["padding"]
        self.padding = p if isinstance(p, str) else _pair(p, "padding")
        self.padding_mode = state["padding_mode"]

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"layout={self.layout!r}, nnz={self.values.numel()}, bias={self.bias is not None}")
