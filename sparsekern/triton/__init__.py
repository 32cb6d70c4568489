"""Triton GPU kernels of sparsekern and their launchers (one private op per layout).

    bsr.py        block-sparse rows: tl.dot per stored block       sparsekern::_triton_bsr
    semi24.py     2:4: compressed load, expand in registers, dot   sparsekern::_triton_semi24
    csc.py        unstructured: row strips, one-hot expanded dot   sparsekern::_triton_csc
    csc_strips.py the CSC -> row-strip repack (built once per weight)
    tiles.py      shared device helpers (program order, epilogue, NaN/Inf in B)
    splitk.py     deterministic split-K reduction
    configs.py    autotune configurations, split-K heuristic, interpreter detection
    selftime.py   standalone GPU timing against cuBLAS and torch's sparse kernels

Importing this package defines the kernels, so ``TRITON_INTERPRET=1`` (Triton's CPU
interpreter) must be set before the first import for it to take effect. The public entry
is the op ``torch.ops.sparsekern.spmm`` through sparsekern.backends.triton.
"""
from .bsr import triton_bsr
from .csc import triton_csc
from .csc_strips import STRIP_ROWS, RowStrips, build_row_strips
from .semi24 import triton_semi24

__all__ = ["triton_bsr", "triton_semi24", "triton_csc", "build_row_strips", "RowStrips",
           "STRIP_ROWS"]
