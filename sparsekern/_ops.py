"""Every op schema of the ``sparsekern`` namespace, defined here and nowhere else.

C++ (csrc/ops.cpp, csrc/cuda/ops_cuda.cpp) and Python (sparsekern/ops.py, the backends)
only register implementations for these names (TORCH_LIBRARY_IMPL, register_kernel,
register_fake, register_autograd); tests/test_op_registration.py fails on a definition
anywhere else. Imported by sparsekern._extension after it loads ``_C`` (kernel
registrations may precede their schemas) and before its ABI check, which calls
``_abi_version``; without ``_C`` the schemas are defined all the same (the Python path and
the reference backend serve them).

Public:
    spmm(values, indices, offsets, M, K, layout, B, bias=None) -> [M, N]   A @ B + bias
    spmm_transposed(values, indices, offsets, M, K, layout, G) -> [K, N]   A.T @ G
    spmm_sampled_dot(values, indices, offsets, M, K, layout, G, B)         (G @ B.T) at A's
                                                                           stored entries
    attention(query, key, value, attn_mask=None, scale=None)               softmax(scale *
                                                          Q K^T + mask) V (sparsekern/_attention.py)
Private (backend kernels, each with a caller-given or fresh output):
    _spmm_dispatch   spmm's Python path (the C++ CPU kernel hands it what it does not serve)
    _spmm_cpu, _spmm_transposed_cpu, _sampled_dot_cpu     csrc/ops.cpp (CPU)
    _spmm_cuda                                            csrc/cuda/ops_cuda.cpp (CUDA)
    _locate_format_error   raises the format validator's error, which names the first bad
                           entry (sparsekern/ops.py); C++ calls it when a kernel reports a
                           bad index tensor
Private helpers of ``_C`` (no tensor arguments; kernels in csrc/ops.cpp): _abi_version,
_kernel_exists, _cpu_isa, _cpu_pool, _pool_team_stalled, _pool_next_backoff,
_pool_thread_descheduled, _cache_probe_verdict, _cpu_has_avx2, _cpu_has_avx512, _csc_cache_info, _csc_cache_clear, _python_path, _reload_env.
    _triton_bsr, _triton_semi24, _triton_csc             sparsekern/triton/*.py (Triton;
                                                          their format tensors are the
                                                          kernel's, see each file)
"""
from __future__ import annotations

import torch

NS = "sparsekern"

#: The format tensors of a sparse weight A [M, K] (see sparsekern.formats), first in every op.
FMT = "Tensor values, Tensor indices, Tensor offsets, SymInt M, SymInt K, str layout"
#: The same with plain ints, for the backend kernels (which never trace symbolic sizes).
_FMT_INT = "Tensor values, Tensor indices, Tensor offsets, int M, int K, str layout"

SCHEMAS = {
    "spmm": f"({FMT}, Tensor B, Tensor? bias=None) -> Tensor",
    "spmm_transposed": f"({FMT}, Tensor G) -> Tensor",
    "spmm_sampled_dot": f"({FMT}, Tensor G, Tensor B) -> Tensor",
    "attention": ("(Tensor query, Tensor key, Tensor value, Tensor? attn_mask=None, "
                  "float? scale=None) -> Tensor"),
    "_spmm_dispatch": f"({FMT}, Tensor B, Tensor? bias=None) -> Tensor",
    "_spmm_cpu": f"({_FMT_INT}, Tensor B, Tensor? bias, Tensor(a!) out) -> ()",
    "_spmm_transposed_cpu": f"({_FMT_INT}, Tensor G) -> Tensor",
    "_sampled_dot_cpu": f"({_FMT_INT}, Tensor G, Tensor B) -> Tensor",
    "_spmm_cuda": f"({_FMT_INT}, Tensor B, Tensor? bias, Tensor(a!) out) -> ()",
    "_locate_format_error": f"({_FMT_INT}) -> ()",
    "_triton_bsr": ("(Tensor values, Tensor indices, Tensor offsets, int M, int K, Tensor B, "
                    "Tensor? bias, Tensor(a!) out, int split_k=0) -> ()"),
    "_triton_semi24": ("(Tensor values, Tensor indices, int M, int K, Tensor B, Tensor? bias, "
                       "Tensor(a!) out, int split_k=0) -> ()"),
    "_triton_csc": ("(Tensor values, Tensor cols, Tensor rows, Tensor strip_ptr, int M, int K, "
                    "Tensor B, Tensor? bias, Tensor(a!) out, int split_k=0) -> ()"),
    "_abi_version": "() -> int",
    "_kernel_exists": "(str layout, ScalarType values_dtype, ScalarType B_dtype) -> bool",
    "_cpu_isa": "() -> str",
    "_cpu_pool": "() -> str",
    "_pool_team_stalled": ("(int start, int entered, int caller_done, int end, int caller_items, "
                           "int items, int threads) -> bool"),
    "_pool_next_backoff": "(int previous, bool stalled) -> int",
    "_pool_thread_descheduled": "(int wall, int cpu) -> bool",
    "_cache_probe_verdict": "(int elapsed_ns, int bytes, int llc_bytes, bool fast_clock) -> bool",
    "_cpu_has_avx2": "() -> bool",
    "_cpu_has_avx512": "() -> bool",
    "_csc_cache_info": "() -> (int, int)",
    "_csc_cache_clear": "() -> ()",
    "_python_path": "(int delta) -> int",
    "_reload_env": "(bool backend_forces_python) -> ()",
}

for _name, _schema in SCHEMAS.items():
    torch.library.define(f"{NS}::{_name}", _schema)
