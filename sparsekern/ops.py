"""The op ``sparsekern::spmm``: argument checks, fake impl, autograd, dispatch (its schema
and every other one of the namespace are in sparsekern/_ops.py).

    spmm(Tensor values, Tensor indices, Tensor offsets, SymInt M, SymInt K, str layout,
         Tensor B, Tensor? bias=None) -> Tensor

computes ``A @ B (+ bias[:, None])`` for the sparse A [M, K] given by its format tensors
(see sparsekern.formats), B dense [K, N] with any strides, bias [M]. The output is [M, N]
in B's dtype (float32 accumulation; float64 in float64), row-major unless B is
column-major (see sparsekern._output). Two helper ops carry the backward pass so that it
traces under torch.compile: ``spmm_transposed`` (A.T @ G) and ``spmm_sampled_dot``
((G @ B.T) at the stored entries).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.autograd.forward_ad as _fwad
from torch._C import _functorch

from . import _extension, _output
from ._ops import NS as _NS
from .backends import reference, select
from .formats import from_parts
from .formats.validate import check_format_meta, check_format_structure

#: Half-precision weights may meet float32 activations (weight-only compression).
_MIXED_OK = {(torch.float16, torch.float32), (torch.bfloat16, torch.float32)}


def _kind_of(t: torch.Tensor) -> str:
    """How a non-dense tensor is named in an error (a nested tensor has no shape to show)."""
    return f"a nested tensor (layout {t.layout})" if t.is_nested else f"layout {t.layout}"


def _check_not_nested(named) -> None:
    """TypeError naming the first nested tensor of ``named`` ((tensor, name) pairs): the
    shape checks below cannot even read a nested tensor's shape."""
    for t, name in named:
        if isinstance(t, torch.Tensor) and t.is_nested:
            raise TypeError(f"{name} must be a dense (strided) tensor, got {_kind_of(t)}")


def check_dense_operand(t, name: str, values: torch.Tensor, rows, what_rows: str) -> None:
    """Check a dense operand ([rows, N], dtype and device of the weight)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.layout != torch.strided or t.is_nested:
        raise TypeError(f"{name} must be a dense (strided) tensor, got "
                        f"{_kind_of(t)}")
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D of shape [{what_rows}, N], got shape "
                         f"{list(t.shape)} ({t.dim()}-D)")
    if t.shape[0] != rows:
        raise ValueError(f"{name} has shape {list(t.shape)} but A needs {what_rows}={rows} rows; "
                         f"expected {name} of shape [{rows}, N]")
    if t.dtype.is_complex or not t.dtype.is_floating_point:
        raise TypeError(f"{name} has unsupported dtype {t.dtype}; expected a floating dtype "
                        f"(float32, float16, bfloat16, float64)")
    if t.dtype != values.dtype and (values.dtype, t.dtype) not in _MIXED_OK:
        raise TypeError(f"{name} has dtype {t.dtype} but the sparse values have dtype "
                        f"{values.dtype}; expected the same dtype (or float32 {name} with "
                        f"float16/bfloat16 values)")
    if t.device != values.device:
        raise ValueError(f"{name} is on {t.device} but the sparse values are on {values.device}; "
                         f"expected one device")


def check_op_args(values, indices, offsets, M, K, layout, dense) -> None:
    """O(1) checks every op of this file runs before any backend: the format tensors, then
    each dense operand ``(tensor, name, rows, what_rows)`` of ``dense``. The index values are
    checked by the backend that reads them (the compiled kernels check each index they use,
    the reference backend runs check_format_structure), for every op alike."""
    _check_not_nested(((values, "values"), (indices, "indices"), (offsets, "offsets")))
    check_format_meta(values, indices, offsets, M, K, layout)
    for t, name, rows, what in dense:
        check_dense_operand(t, name, values, rows, what)


def check_spmm_args(values, indices, offsets, M, K, layout, B, bias) -> None:
    """O(1) checks of a spmm call (names argument, shape, expectation)."""
    check_op_args(values, indices, offsets, M, K, layout, ((B, "B", K, "K"),))
    if bias is not None:
        if not isinstance(bias, torch.Tensor):
            raise TypeError(f"bias must be a torch.Tensor or None, got {type(bias).__name__}")
        if bias.layout != torch.strided or bias.is_nested:
            raise TypeError(f"bias must be a dense (strided) tensor, got {_kind_of(bias)}")
        if bias.dim() != 1 or bias.shape[0] != M:
            raise ValueError(f"bias has shape {list(bias.shape)}; expected [M] = [{M}]")
        if bias.dtype != B.dtype:
            raise TypeError(f"bias has dtype {bias.dtype}; expected the output dtype {B.dtype}")
        if bias.device != B.device:
            raise ValueError(f"bias is on {bias.device}; expected {B.device}")


def check_transposed_args(values, indices, offsets, M, K, layout, G) -> None:
    """O(1) checks of a spmm_transposed call (G [M, N])."""
    check_op_args(values, indices, offsets, M, K, layout, ((G, "G", M, "M"),))


def check_sampled_dot_args(values, indices, offsets, M, K, layout, G, B) -> None:
    """O(1) checks of a spmm_sampled_dot call (G [M, N], B [K, N])."""
    check_op_args(values, indices, offsets, M, K, layout, ((G, "G", M, "M"), (B, "B", K, "K")))
    if G.shape[1] != B.shape[1]:
        raise ValueError(f"G has shape {list(G.shape)} and B has shape {list(B.shape)}; "
                         f"expected the same number of columns N")
    if G.dtype != B.dtype:
        raise TypeError(f"G has dtype {G.dtype} but B has dtype {B.dtype}; expected one dtype")


def _spmm_impl(values, indices, offsets, M, K, layout, B, bias=None):
    """Validate, allocate the output, pick a backend and run it."""
    check_spmm_args(values, indices, offsets, M, K, layout, B, bias)
    out = _output.empty_output(M, B, B.dtype)
    if out.numel() == 0:
        return out
    if bias is not None and not bias.is_contiguous():
        # The GPU kernels (Triton's store_tile / reduce_split_k, csrc/cuda) read bias[m] at
        # bias_ptr + m: a strided bias gave a wrong product, an expanded one (stride 0) read
        # past its one-element storage. An [M] copy, only for a bias that is not contiguous.
        bias = bias.contiguous()
    backend = select(layout, values.dtype, B.dtype, values.device, M, K, B.shape[1])
    return backend.spmm(values, indices, offsets, M, K, layout, B, bias, out)


# CUDA (and CPU when the C++ fast path is not built) run the Python path directly.
torch.library.register_kernel(f"{_NS}::spmm", ("cuda",) if _extension._C is not None
                              else ("cpu", "cuda"), _spmm_impl)
# The Python path, which the C++ CPU kernel hands every call it does not serve.
torch.library.register_kernel(f"{_NS}::_spmm_dispatch", ("cpu", "cuda"), _spmm_impl)


@torch.library.register_fake(f"{_NS}::spmm")
def _spmm_fake(values, indices, offsets, M, K, layout, B, bias=None):
    check_spmm_args(values, indices, offsets, M, K, layout, B, bias)
    return _output.empty_output(M, B, B.dtype)


# Autocast (torch.autocast on CPU or CUDA): spmm is a linear op, so it casts as nn.Linear
# does under autocast: every floating input that is not float64 (values, B, bias) to the
# autocast dtype of the device, then runs with that device's autocast key excluded. The
# casts are differentiable: a float32 weight gets a float32 gradient. Without this, the
# half-precision activations that autocast's own Linear layers hand the next sparse layer
# met float32 values and were rejected.
def _autocast_kernel(device_type: str):
    key = "Autocast" + torch._C._dispatch_key_for_device(device_type)
    excluded = torch._C.DispatchKeySet(getattr(torch._C.DispatchKey, key))

    def cast(t, dtype):
        if t is None or dtype is None or not t.is_floating_point() or t.dtype == torch.float64:
            return t
        return t.to(dtype) if t.device.type == device_type else t

    def kernel(values, indices, offsets, M, K, layout, B, bias=None):
        dtype = torch.get_autocast_dtype(device_type)
        if any(isinstance(t, torch.Tensor) and t.dtype == torch.float64 for t in (values, B, bias)):
            # float64 is never cast, so casting the others only made the dtype error name a
            # dtype the caller never passed ("B has dtype float64 but the sparse values have
            # dtype bfloat16" for float32 values): the op sees the caller's dtypes instead.
            dtype = None
        with torch._C._ExcludeDispatchKeyGuard(excluded):
            return torch.ops.sparsekern.spmm(cast(values, dtype), indices, offsets, M, K,
                                             layout, cast(B, dtype), cast(bias, dtype))
    return key, kernel


_AUTOCAST_LIB = torch.library.Library(_NS, "IMPL")
for _device in ("cpu", "cuda"):
    _key, _kernel = _autocast_kernel(_device)
    _AUTOCAST_LIB.impl("spmm", _kernel, _key)


# A torch.sparse tensor among the operands sends the call to a sparse dispatch key, where
# the op had no kernel: torch's "Could not run 'sparsekern::spmm' with arguments from the
# 'SparseCPU' backend" named no argument. These kernels run the argument checks instead.
# The same for the other tensor kinds with a dispatch key of their own: MKL-DNN (layout
# _mkldnn), quantized (dtype qint8/quint8/qint32) and nested tensors (3-D or more).
def _sparse_operand_kernel(check, n_args: int):
    def kernel(*args):
        args = args + (None,) * (n_args - len(args))  # an omitted optional bias
        check(*args)  # names the operand ("must be a dense (strided) tensor", its dtype, ...)
        kinds = [(a.layout, a.dtype, "nested" if a.is_nested else "")
                 for a in args if isinstance(a, torch.Tensor)]
        raise TypeError(f"sparsekern takes dense (strided), non-nested, non-quantized tensors; "
                        f"got (layout, dtype, nested) {kinds}")
    return kernel


_OPERAND_KEYS = ("SparseCPU", "SparseCsrCPU", "SparseCUDA", "SparseCsrCUDA", "MkldnnCPU",
                 "QuantizedCPU", "QuantizedCUDA", "NestedTensorCPU", "NestedTensorCUDA")
_SPARSE_LIB = torch.library.Library(_NS, "IMPL")
for _op, _check, _n in (("spmm", check_spmm_args, 8),
                        ("spmm_transposed", check_transposed_args, 7),
                        ("spmm_sampled_dot", check_sampled_dot_args, 8)):
    for _key in _OPERAND_KEYS:
        _SPARSE_LIB.impl(_op, _sparse_operand_kernel(_check, _n), _key)


@torch.library.register_kernel(f"{_NS}::_locate_format_error", ("cpu", "cuda"))
def _locate_format_error(values, indices, offsets, M, K, layout):
    """Raise the format validator's ValueError, which names the first bad entry (e.g.
    "indices[12]=-1 is out of range"); the C++ kernels only report that one exists. Returns
    when it finds none (the caller then raises its own message)."""
    check_format_structure(values, indices, offsets, M, K, layout)


def _no_tangents(op: str, *tensors) -> None:
    """The helper ops have reverse-mode formulas only: a forward-mode tangent would come back
    as zeros (a wrong answer), so it is an error."""
    if forward_ad_active(*tensors):
        raise RuntimeError(f"torch.ops.sparsekern.{op} has no forward-mode AD formula (got an "
                           f"input with a forward-mode tangent: torch.func.jvp, jacfwd or "
                           f"forward_ad.make_dual)")


def _backward_backend(layout, values, G):
    """The backend module that runs a backward helper op (a compiled CPU kernel when one
    serves the case and no backend is forced to something else, else the reference)."""
    mod = select(layout, values.dtype, G.dtype, values.device)
    return mod if hasattr(mod, "spmm_transposed") else reference


@torch.library.register_kernel(f"{_NS}::spmm_transposed", ("cpu", "cuda"))
def _spmm_transposed_impl(values, indices, offsets, M, K, layout, G):
    check_transposed_args(values, indices, offsets, M, K, layout, G)
    _no_tangents("spmm_transposed", values, G)
    if K == 0 or G.shape[1] == 0:  # an empty output (as spmm, no backend runs)
        return G.new_empty((K, G.shape[1]))
    backend = _backward_backend(layout, values, G)
    out = backend.spmm_transposed(values, indices, offsets, M, K, layout, G)
    # Row-major on every backend, as the fake kernel below: torch.compile checks the strides.
    return out if out.is_contiguous() else out.contiguous()


@torch.library.register_fake(f"{_NS}::spmm_transposed")
def _spmm_transposed_fake(values, indices, offsets, M, K, layout, G):
    check_transposed_args(values, indices, offsets, M, K, layout, G)
    return G.new_empty((K, G.shape[1]))


@torch.library.register_kernel(f"{_NS}::spmm_sampled_dot", ("cpu", "cuda"))
def _sampled_dot_impl(values, indices, offsets, M, K, layout, G, B):
    check_sampled_dot_args(values, indices, offsets, M, K, layout, G, B)
    _no_tangents("spmm_sampled_dot", values, G, B)
    if values.numel() == 0 or G.shape[1] == 0:  # an empty output or empty sums (as spmm)
        return torch.zeros_like(values, memory_format=torch.contiguous_format)
    backend = _backward_backend(layout, values, G)
    return backend.sampled_dot(values, indices, offsets, M, K, layout, G, B)


@torch.library.register_fake(f"{_NS}::spmm_sampled_dot")
def _sampled_dot_fake(values, indices, offsets, M, K, layout, G, B):
    check_sampled_dot_args(values, indices, offsets, M, K, layout, G, B)
    return torch.empty_like(values, memory_format=torch.contiguous_format)


# Autograd of the two helper ops (what double backward of spmm runs). Both are linear in
# their dense operands; values only carries the sparsity pattern here (no gradient).
#   T = A.T @ G:                dG = A @ dT,           dA = (G @ dT.T) at the stored entries
#   S = (G @ B.T) at entries:   dG = A(dS) @ B,        dB = A(dS).T @ G   (A(dS): values dS)
def _helper_setup(ctx, inputs, output):
    values, indices, offsets, M, K, layout = inputs[:6]
    ctx.save_for_backward(values, indices, offsets, *inputs[6:])
    ctx.M, ctx.K, ctx.layout = M, K, layout


def _transposed_backward(ctx, grad):
    values, indices, offsets, G = ctx.saved_tensors
    fmt = (indices, offsets, ctx.M, ctx.K, ctx.layout)
    need = ctx.needs_input_grad
    g_values = g_G = None
    if need[0]:
        g_values = torch.ops.sparsekern.spmm_sampled_dot(values, *fmt, G, grad)
    if need[6]:
        g_G = torch.ops.sparsekern.spmm(values, *fmt, grad, None)
    return g_values, None, None, None, None, None, g_G


def _sampled_dot_backward(ctx, grad):
    values, indices, offsets, G, B = ctx.saved_tensors
    fmt = (indices, offsets, ctx.M, ctx.K, ctx.layout)
    need = ctx.needs_input_grad
    dS = grad.contiguous()
    g_G = g_B = None
    if need[6]:
        g_G = torch.ops.sparsekern.spmm(dS, *fmt, B, None)
    if need[7]:
        g_B = torch.ops.sparsekern.spmm_transposed(dS, *fmt, G)
    return None, None, None, None, None, None, g_G, g_B


def _helper_autograd_kernel(name: str, backward, setup=None):
    """The Autograd-key kernel of a helper op: torch.library.register_autograd's generated
    kernel steps below autograd when nothing requires grad, which is how torch.func.jvp
    tangents were dropped without an error (a zero JVP); here they are seen and refused
    first. (Under torch.func.grad / vjp the formula raises torch's "must override the
    setup_context staticmethod", as the generated one did: an autograd.Function applied
    inside an Autograd kernel cannot take part in functorch's transforms.)"""
    op = getattr(torch.ops.sparsekern, name).default

    class Formula(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *args):
            with torch._C._AutoDispatchBelowAutograd():
                out = op(*args)
            (setup or _helper_setup)(ctx, args, out)
            return out

        @staticmethod
        def backward(ctx, grad):
            return backward(ctx, grad)

    Formula.__name__ = f"{name}_backward"
    dense_args = (0, 6, 7)  # the float operands: values, G or B, and B (sampled_dot) or bias

    def kernel(*args):
        _no_tangents(name, *(args[i] for i in dense_args if i < len(args)))
        if torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad
                                           for a in args):
            return Formula.apply(*args)
        with torch._C._AutoDispatchBelowAutograd():
            return op(*args)

    return kernel


_HELPER_AUTOGRAD_LIB = torch.library.Library(_NS, "IMPL")
_HELPER_AUTOGRAD_LIB.impl("spmm_transposed",
                          _helper_autograd_kernel("spmm_transposed", _transposed_backward),
                          "Autograd")
_HELPER_AUTOGRAD_LIB.impl("spmm_sampled_dot",
                          _helper_autograd_kernel("spmm_sampled_dot", _sampled_dot_backward),
                          "Autograd")


# The autograd formula of spmm is the C++ node SpmmFunction (csrc/ops.cpp), registered for
# the Autograd key of every device whenever _C is built: recording it costs a fraction of a
# Python formula's (torch.library.register_autograd runs ~40 lines of Python per call).
#   Y = A @ B + bias:  dB = A.T @ dY,  dA = (dY @ B.T) at the stored entries,  dbias = dY.sum(1)
# Per-call cost in us (64x64 CSC weight, 90% zeros; x [8, 64] for SparseLinear, [1, 64] for
# sk.linear; inference_mode except the autograd row): median of 9 runs alternating the three
# trees (each run's figure a median of 7 batches), the runs' range in brackets. Machine NOT
# quiet: load average 3.8-7.9 on 2 cores (other jobs niced), so absolute figures are ~2-4x
# a quiet machine's; compare columns. Command, per tree, 3 x 3 alternations:
#   flock /work/wt/timing.lock env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=. \
#       python overhead.py <label>     (/work/wt/overhead.py plus an sk.linear row)
#                            before (6f5fdfb)   Python formula (f461f87)   C++ node (this)
#   SparseLinear fwd + grad  26.7 (18.1-46.8)   85.9 (42.7-186.2)          27.3 (14.0-41.6)
#   sk.linear GEMV           19.0 (13.3-31.2)   14.2 (10.3-29.7)            9.4 (7.6-19.3)
#   sk.spmm GEMV             11.9 (8.2-20.1)    13.5 (9.8-17.1)            14.0 (7.0-19.4)
#   torch.mm GEMV (dense)    10.7 (5.2-15.1)     5.4 (4.9-11.5)             7.0 (3.0-11.3)
#   4096^2 90% CSC GEMV      11431 (2945-14625) 2208 (1551-3824)           2500 (1140-4248)
# (the last row is the kernel's, not this layer's.) In one process, recording this node adds
# ~2 us to a no_grad SparseLinear call.
# A pure-Python install (no compiler: _C missing) has no C++ node; only then the same formula
# is registered here, in Python (the helper ops' formulas below carry double backward).
def _python_setup_context(ctx, inputs, output):
    values, indices, offsets, M, K, layout, B, bias = inputs
    ctx.save_for_backward(values, indices, offsets, B)
    ctx.M, ctx.K, ctx.layout = M, K, layout


def _python_backward(ctx, grad):
    values, indices, offsets, B = ctx.saved_tensors
    fmt = (indices, offsets, ctx.M, ctx.K, ctx.layout)
    need = ctx.needs_input_grad
    g_values = g_B = g_bias = None
    if need[0] and need[6]:
        grad = grad.contiguous()  # one row-major copy for both backward products
    if need[0]:
        g_values = torch.ops.sparsekern.spmm_sampled_dot(values, *fmt, grad, B)
    if need[6]:
        g_B = torch.ops.sparsekern.spmm_transposed(values, *fmt, grad)
    if len(need) > 7 and need[7]:
        g_bias = grad.sum(1)
    return (g_values, None, None, None, None, None, g_B, g_bias)[:len(need)]


if _extension._C is None:  # the Autograd kernel that refuses tangents, as the C++ node does
    _HELPER_AUTOGRAD_LIB.impl("spmm", _helper_autograd_kernel("spmm", _python_backward,
                                                              _python_setup_context), "Autograd")


def forward_ad_active(*tensors) -> bool:
    """True when a forward-mode AD tangent rides on one of ``tensors`` (torch.func.jvp,
    jacfwd, torch.autograd.forward_ad). The op's autograd is a C++ node with no forward
    formula, through which torch.func.jvp returned zero tangents without an error."""
    if _fwad._current_level < 0 and not torch._C._are_functorch_transforms_active():
        return False  # the common case: two cheap checks
    return any(isinstance(t, torch.Tensor) and _fwad.unpack_dual(t).tangent is not None
               for t in tensors)


def dense_path_needed(*tensors) -> bool:
    """True when the wrappers must compute through :func:`spmm_forward_ad`: a forward-mode
    tangent rides on one of ``tensors``, or a functorch transform other than vmap
    (torch.func.grad, vjp, jacrev) is active: it cannot run the op's C++ autograd node
    ("cannot use C++ torch::autograd::Function with functorch transforms"). Under vmap alone
    the op runs (once per batch element)."""
    if _fwad._current_level < 0 and not torch._C._are_functorch_transforms_active():
        return False  # the common case: two cheap checks
    stack = _functorch.get_interpreter_stack() or []
    return (any(i.key() != _functorch.TransformType.Vmap for i in stack)
            or forward_ad_active(*tensors))


def spmm_forward_ad(values, indices, offsets, M, K, layout: str, B: torch.Tensor,
                    bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The op's product through the dense matrix, in differentiable torch ops (forward and
    reverse mode): for calls that carry forward-mode tangents (see forward_ad_active)."""
    check_spmm_args(values, indices, offsets, M, K, layout, B, bias)
    # The index tensors are read here (to_dense), so they get the checks a backend runs: a
    # negative index, an invalid 2:4 nibble or offsets that do not end at nnz otherwise
    # scattered to the wrong place and returned a wrong product without an error.
    check_format_structure(values, indices, offsets, M, K, layout)
    W = from_parts(layout, values, indices, offsets, (M, K), validate=False).to_dense()
    acc = torch.float64 if B.dtype == torch.float64 else torch.float32
    Y = W.to(acc) @ B.to(acc)
    if bias is not None:
        Y = Y + bias.to(acc)[:, None]
    return Y.to(B.dtype)


def spmm_op(values, indices, offsets, M, K, layout: str, B: torch.Tensor,
            bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Call ``torch.ops.sparsekern.spmm`` (the wrappers' one entry point), or
    :func:`spmm_forward_ad` under forward-mode AD or a functorch transform
    (:func:`dense_path_needed`)."""
    if dense_path_needed(values, B, bias):
        return spmm_forward_ad(values, indices, offsets, M, K, layout, B, bias)
    return torch.ops.sparsekern.spmm(values, indices, offsets, M, K, layout, B, bias)
