"""sparsekern: sparse kernels that make pruned PyTorch models run faster.

Public API: to_sparse, spmm, linear, SparseLinear, SparseConv2d, sparsify, save_sparse,
load_sparse, use_backend, the formats (SparseFormat, Semi24, BSR, CSC, NM14, SELL), Args (several
positional model inputs in calibration data, see sparsekern.inputs), prepare_ddp (a model with
packed layers under DistributedDataParallel), keep_freed_memory (glibc's malloc keeps freed
activations for reuse: eager forwards without page faults, see sparsekern.runtime), and the op
torch.ops.sparsekern.spmm. How it fits together: docs/ARCHITECTURE.md; adding a layout:
docs/adding-a-layout.md.
"""
from . import _extension
from . import ops  # noqa: F401  (defines torch.ops.sparsekern.spmm)
from . import _attention  # noqa: F401  (torch.ops.sparsekern.attention's Python side)
from .backends import use_backend
from .formats import BSR, CSC, NM14, SELL, Semi24, SparseFormat, to_sparse
from .functional import linear, spmm
from .conv import SparseConv2d
from .nn import SparseLinear, register_auto as _register_auto, sparsify
from .serialization import load_sparse, save_sparse
from ._packed_module import prepare_ddp
from .inputs import Args
from .runtime import keep_freed_memory

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

#: Subpackages above the core, imported on first attribute access (``sk.prune.prune_model``
#: works after a plain ``import sparsekern as sk``, without loading them at import).
_LAZY_SUBMODULES = ("prune", "auto", "bench", "demo", "models")


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        import importlib
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["to_sparse", "spmm", "linear", "SparseLinear", "SparseConv2d", "sparsify", "save_sparse",
           "load_sparse", "use_backend", "SparseFormat", "Semi24", "BSR", "CSC", "NM14", "SELL", "Args",
           "prepare_ddp", "keep_freed_memory", "__version__"]
