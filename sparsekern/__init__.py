"""sparsekern: sparse kernels that make pruned PyTorch models run faster.

Public API (see DESIGN.md): to_sparse, spmm, linear, SparseLinear, sparsify,
save_sparse, load_sparse, use_backend, Args (several
positional model inputs in calibration data, see sparsekern.inputs), and the op torch.ops.sparsekern.spmm.
"""
from . import _extension
from . import ops  # noqa: F401  (defines torch.ops.sparsekern.spmm)
from .backends import use_backend
from .formats import BSR, CSC, Semi24, SparseFormat, to_sparse
from .functional import linear, spmm
from .conv import SparseConv2d
from .nn import SparseLinear, register_auto as _register_auto, sparsify
from .serialization import load_sparse, save_sparse
from .inputs import Args

from ._version import __version__



class _LazyAuto:
    """``layout="auto"`` for sparsekern.nn: sparsekern.auto, imported on first use (the core
    never imports it; see docs/ARCHITECTURE.md, "Layers")."""

    @staticmethod
    def _choose():
        from .auto import choose
        return choose

    def decide_matrix(self, W, blocksize=None):
        return self._choose().decide_matrix(W, blocksize)

    def sparsify_auto(self, *args, **kwargs):
        return self._choose().sparsify_auto(*args, **kwargs)

    @property
    def DEFAULT_MARGIN(self):
        return self._choose().DEFAULT_MARGIN


_register_auto(_LazyAuto())

_extension.extension()  # warns once if the compiled kernels are missing or stale

__all__ = ["to_sparse", "spmm", "linear", "SparseLinear", "SparseConv2d", "sparsify", "save_sparse",
           "load_sparse", "use_backend", "SparseFormat", "Semi24", "BSR", "CSC", "Args",
           "__version__"]
