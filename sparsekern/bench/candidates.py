"""What is timed in a case: the sparsekern op, the dense baselines and the sparse peers.

Every candidate computes ``y = x @ W.T`` for the same pruned weight W [M, K] and the same
activation x [N, K] (row-major, as a previous layer produces it):

* ``sparsekern``: ``sparsekern.linear(x, A)`` with A = ``sparsekern.to_sparse(W, layout)``
  (the path SparseLinear takes: torch.ops.sparsekern.spmm with B = x.T).
* dense: ``torch.F.linear`` (x @ W.T) and ``torch.matmul`` (W @ x.T) through torch's BLAS
  (MKL/OpenBLAS on CPU, cuBLAS on GPU), and ``numpy.matmul`` through NumPy's BLAS (CPU).
* peers, on the same W: ``torch.sparse.csr`` and ``torch.sparse.bsr``
  (torch.sparse.mm, CPU; CSR on GPU is cuSPARSE), ``torch.semi_structured``
  (to_sparse_semi_structured + F.linear, GPU, 2:4) and ``torch.bsr_triton``
  (F.linear with a BSR weight, which torch serves with its Triton kernels, GPU).

Building a candidate (packing, conversion) is never timed; only ``fn(prepare(x))`` is.
A candidate that cannot run here carries ``reason`` instead of ``fn``. The converted
weights are kept in a ``cache`` dict per weight, so the cases that share a weight (every N
of a layout/shape/sparsity) convert it once.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable, List, Optional

import torch
import torch.nn.functional as F

from ..timing.machine import serving_backend  # noqa: F401  (re-exported)
from .cases import Case

#: Work (stored values x N) above which a case served by the reference backend is not
#: timed: the reference is an oracle, and big cases would take minutes per call.
MAX_REFERENCE_WORK = 1 << 22


def _identity(x):
    return x


@dataclass
class Candidate:
    """One timed implementation. ``fn(prepare(x))`` returns y as [N, M] ("NM") or [M, N]."""

    name: str
    kind: str                       # "sparsekern" | "dense" | "peer"
    fn: Optional[Callable] = None
    prepare: Callable = _identity
    out_layout: str = "NM"
    reason: str = ""                # why fn is None
    info: dict = field(default_factory=dict)


def _memo(cache: Optional[dict], key: str, build: Callable):
    if cache is None:
        return build()
    if key not in cache:
        cache[key] = build()
    return cache[key]


def sparsekern_candidate(case: Case, W: torch.Tensor,
                         max_reference_work: int = MAX_REFERENCE_WORK,
                         cache: Optional[dict] = None) -> Candidate:
    from ..formats import to_sparse
    from ..functional import linear

    A = _memo(cache, "sparsekern", lambda: to_sparse(W, layout=case.layout,
                                                         blocksize=case.blocksize))
    nonzeros = _memo(cache, "nonzeros", lambda: int((W != 0).sum()))
    backend = serving_backend(case.layout, W.dtype, W.device, case.M, case.K, case.N)
    info = {"backend": backend, "format_bytes": A.nbytes, "stored": A.nnz,
            "nonzeros": nonzeros, "work": A.nnz * case.N}
    cand = Candidate("sparsekern", "sparsekern", info=info)
    if backend == "reference" and info["work"] > max_reference_work:
        cand.reason = (f"served by the reference backend (no kernel for this case yet) and "
                       f"stored*N > {max_reference_work}: not timed")
        return cand
    cand.fn = lambda x: linear(x, A)
    return cand


def dense_candidates(W: torch.Tensor) -> List[Candidate]:
    out = [Candidate("torch.F.linear", "dense", fn=lambda x: F.linear(x, W)),
           Candidate("torch.matmul", "dense", fn=lambda x: torch.matmul(W, x.t()),
                     out_layout="MN")]
    if W.device.type == "cpu":
        if W.dtype in (torch.float32, torch.float64):
            Wt = W.numpy().T  # a transposed view: BLAS reads W as stored
            out.append(Candidate("numpy.matmul", "dense", fn=lambda xn: xn @ Wt,
                                 prepare=lambda x: x.numpy()))
        else:
            out.append(Candidate("numpy.matmul", "dense",
                                 reason=f"NumPy has no BLAS GEMM for {W.dtype}"))
    return out


#: torch warns that its sparse CSR/BSR support is in beta; that is not news here.
BETA_WARNING = ".*is in beta state.*"


def _peer(name: str, build: Callable[[], Candidate]) -> Candidate:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=BETA_WARNING)
        try:
            return build()
        except Exception as e:  # the installed torch cannot do it for this weight
            first = (str(e).splitlines() or [""])[0][:200]
            return Candidate(name, "peer", reason=f"{type(e).__name__}: {first}")


def _csr(W, cache):
    Wc = _memo(cache, "csr", W.to_sparse_csr)
    return Candidate("torch.sparse.csr", "peer", fn=lambda x: torch.sparse.mm(Wc, x.t()),
                     out_layout="MN")


def _bsr(W, blocksize, cache):
    Wb = _memo(cache, "bsr", lambda: W.to_sparse_bsr(tuple(blocksize)))
    return Candidate("torch.sparse.bsr", "peer", fn=lambda x: torch.sparse.mm(Wb, x.t()),
                     out_layout="MN", info={"blocksize": list(blocksize)})


def _semi_structured(W, cache):
    from torch.sparse import to_sparse_semi_structured
    Ws = _memo(cache, "semi_structured", lambda: to_sparse_semi_structured(W))
    return Candidate("torch.semi_structured", "peer", fn=lambda x: F.linear(x, Ws),
                     info={"class": type(Ws).__name__})


def _bsr_triton(W, blocksize, cache):
    import torch.sparse._triton_ops  # noqa: F401  (absent: torch has no BSR Triton kernels)
    Wb = _memo(cache, "bsr", lambda: W.to_sparse_bsr(tuple(blocksize)))
    return Candidate("torch.bsr_triton", "peer", fn=lambda x: F.linear(x, Wb),
                     info={"blocksize": list(blocksize)})


#: Peers measured per (device type, layout).
PEERS = {
    ("cpu", "2:4"): ("torch.sparse.csr",),
    ("cpu", "bsr"): ("torch.sparse.csr", "torch.sparse.bsr"),
    ("cpu", "csc"): ("torch.sparse.csr",),
    ("cuda", "2:4"): ("torch.semi_structured",),
    ("cuda", "bsr"): ("torch.bsr_triton",),
    ("cuda", "csc"): ("torch.sparse.csr",),
}
#: Peers of a layout PEERS does not list: torch's CSR takes any zeros.
ANY_LAYOUT_PEERS = ("torch.sparse.csr",)
DENSE = {"cpu": ("torch.F.linear", "torch.matmul", "numpy.matmul"),
         "cuda": ("torch.F.linear", "torch.matmul")}

_PEER_BUILDERS = {
    "torch.sparse.csr": lambda case, W, cache: _csr(W, cache),
    "torch.sparse.bsr": lambda case, W, cache: _bsr(W, case.blocksize, cache),
    "torch.semi_structured": lambda case, W, cache: _semi_structured(W, cache),
    "torch.bsr_triton": lambda case, W, cache: _bsr_triton(W, case.blocksize, cache),
}


def candidate_names(layout: str, device_type: str) -> List[str]:
    """Names ``build_candidates`` returns for a layout on a device type, in order."""
    return ["sparsekern"] + list(DENSE[device_type]) + list(peers(layout, device_type))


def peers(layout: str, device_type: str) -> tuple:
    """The peers measured for ``layout`` on a device type (PEERS, else ANY_LAYOUT_PEERS)."""
    return PEERS.get((device_type, layout), ANY_LAYOUT_PEERS)


def peer_candidates(case: Case, W: torch.Tensor, cache: Optional[dict] = None
                    ) -> List[Candidate]:
    """Peers that make sense for the case's layout on W's device (see PEERS)."""
    return [_peer(name, lambda name=name: _PEER_BUILDERS[name](case, W, cache))
            for name in peers(case.layout, W.device.type)]


def build_candidates(case: Case, W: torch.Tensor,
                     max_reference_work: int = MAX_REFERENCE_WORK,
                     cache: Optional[dict] = None) -> List[Candidate]:
    """sparsekern first, then the dense baselines, then the peers (all on W's device).

    ``cache``: a dict kept per weight W, holding its conversions (packed format, CSR, ...).
    """
    return ([sparsekern_candidate(case, W, max_reference_work, cache)] + dense_candidates(W) +
            peer_candidates(case, W, cache))


def as_nm(out, out_layout: str) -> torch.Tensor:
    """A candidate's output as a torch [N, M] tensor (for the correctness check)."""
    if not isinstance(out, torch.Tensor):
        out = torch.from_numpy(out)
    if out.layout != torch.strided:
        out = out.to_dense()
    return out.t() if out_layout == "MN" else out
