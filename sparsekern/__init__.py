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
from .nn import SparseLinear, sparsify
from .serialization import load_sparse, save_sparse
from .inputs import Args

__version__ = "0.1.0"

_extension.extension()  # warns once if the compiled kernels are missing or stale

__all__ = ["to_sparse", "spmm", "linear", "SparseLinear", "SparseConv2d", "sparsify", "save_sparse",
           "load_sparse", "use_backend", "SparseFormat", "Semi24", "BSR", "CSC", "Args",
           "__version__"]
