"""The one rule for the op's output tensor, shared by every backend and the fake impl.

The output is [M, N]. It is row-major, except when B is column-major (B.stride(0) == 1,
as for ``x.T`` with x a contiguous [N, K] activation): then the output is column-major too,
so that ``linear`` returns a contiguous [N, M] without a copy.
"""
from __future__ import annotations

import torch

#: Tests set this to fill every new output with NaN, so an element a kernel forgets to
#: write fails the comparison with the reference.
POISON_OUTPUT = False


class poisoned_outputs:
    """Context manager: every op output allocated inside starts as NaN (for tests)."""

    def __enter__(self):
        from ._extension import python_path

        global POISON_OUTPUT
        self._prev = POISON_OUTPUT
        self._path = python_path().__enter__()
        POISON_OUTPUT = True
        return self

    def __exit__(self, *exc):
        global POISON_OUTPUT
        POISON_OUTPUT = self._prev
        self._path.__exit__(*exc)
        return False


def output_is_column_major(B: torch.Tensor) -> bool:
    N = B.shape[1]
    return N > 1 and B.shape[0] > 1 and B.stride(0) == 1


def empty_output(M, B: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Allocate the [M, N] output for spmm(A, B) (see module docstring for its strides)."""
    N = B.shape[1]
    if output_is_column_major(B):
        out = torch.empty((N, M), dtype=dtype, device=B.device).t()
    else:
        out = torch.empty((M, N), dtype=dtype, device=B.device)
    if POISON_OUTPUT:
        out.fill_(float("nan"))
    return out
