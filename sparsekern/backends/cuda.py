"""CUDA C++ backend: binds csrc/cuda through ``torch.ops.sparsekern._spmm_cuda``.

Serves, on CUDA tensors:
  * 2:4 with float16/bfloat16 values and B of the same dtype, on sparse tensor cores
    (mma.sp m16n8k32, fp32 accumulation);
  * CSC with float32/float16/bfloat16 values and B of the same dtype, or half values with
    float32 B; EIE-style, meant for batch 1 and small N (columns with all-zero activations are
    skipped; correct for any N, each group of 8 columns of B costs one pass over the weight).
Each weight is repacked once into the layout its kernel reads (cuda_repack.py), cached on the
values tensor; the repack also validates the format tensors. B is read in place when the
kernel can (see cuda_repack.kernel_reads_b), else copied, inside the call.
"""
from __future__ import annotations

from typing import Tuple

import torch

from .. import _extension
from ..formats.base import cached_repack, one_check_per_call
from . import forced_backend, gpu_choice, reference
from .cuda_repack import repack_csc_slabs, repack_semi24, semi24_b_operand

name = "cuda"

#: (values dtype, B dtype) pairs per layout.
_SUPPORTED = {
    "2:4": {(torch.float16, torch.float16), (torch.bfloat16, torch.bfloat16)},
    "csc": {(torch.float32, torch.float32), (torch.float16, torch.float16),
            (torch.bfloat16, torch.bfloat16), (torch.float16, torch.float32),
            (torch.bfloat16, torch.float32)},
}


def _has_cuda_op() -> bool:
    """Whether _C registered a CUDA kernel for _spmm_cuda (its schema, in sparsekern/_ops.py,
    exists in every build)."""
    return torch._C._dispatch_has_kernel_for_dispatch_key("sparsekern::_spmm_cuda", "CUDA")


def available() -> Tuple[bool, str]:
    if not torch.cuda.is_available():
        return False, "no CUDA device is available"
    if _extension._C is None:
        return False, _extension.unavailable_reason()
    if not _has_cuda_op():
        return False, ("sparsekern._C was built without the CUDA kernels (torch without CUDA or "
                       "no nvcc at build time; rebuild with SPARSEKERN_CUDA=1)")
    return True, ""


def supports(layout, values_dtype, B_dtype, device) -> bool:
    return device.type == "cuda" and (values_dtype, B_dtype) in _SUPPORTED.get(layout, ())


def spmm(values, indices, offsets, M, K, layout, B, bias, out):
    """out [M, N] = A @ B (+ bias): the fastest candidate for the call (gpu_choice.dispatch),
    or our kernel when a backend is forced (``use_backend``)."""
    if forced_backend() is None and out.is_cuda:
        return gpu_choice.dispatch(values, indices, offsets, int(M), int(K), layout, B, bias,
                                   out)
    return own_spmm(values, indices, offsets, M, K, layout, B, bias, out)


def own_spmm(values, indices, offsets, M, K, layout, B, bias, out):
    """out [M, N] = A @ B (+ bias) with our kernels; A given by the user's format tensors."""
    with one_check_per_call():  # the validation and the repack check the bytes once
        return _own_spmm(values, indices, offsets, M, K, layout, B, bias, out)


def _own_spmm(values, indices, offsets, M, K, layout, B, bias, out):
    M, K = int(M), int(K)
    if layout == "2:4":
        packed = cached_repack(values, f"cuda:2:4:mma.sp:{M}x{K}", (indices,),
                               lambda: repack_semi24(values, indices, M, K))
        torch.ops.sparsekern._spmm_cuda(packed.a_frag, packed.meta, offsets, M, K, "2:4",
                                        semi24_b_operand(B), bias, out)
        return out
    if layout == "csc":
        packed = cached_repack(values, f"cuda:csc:slabs:{M}x{K}", (indices, offsets),
                               lambda: repack_csc_slabs(values, indices, offsets, M, K))
        if packed is None:  # beyond the kernel's int32 slab pointers
            return reference.spmm(values, indices, offsets, M, K, layout, B, bias, out)
        torch.ops.sparsekern._spmm_cuda(packed.values, packed.rows, packed.ptr, M, K, "csc", B,
                                        bias, out)
        return out
    raise RuntimeError(f"the cuda backend has no kernel for layout={layout!r}")
