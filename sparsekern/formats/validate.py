"""Checks of the three format tensors against the op contract (docs/ARCHITECTURE.md, "The op").

``check_format_meta`` is O(1): shapes, dtypes and devices only; every call of the op runs
it: the checks common to every layout here, then the layout's own ``check_meta`` (see
formats/layouts.py). ``check_format_structure`` (the layout's ``check_structure``) reads
the index tensors (O(nnz)): offsets start at 0, never decrease and end at the number of
stored entries, and every index is in range. Formats
run both when they are built; the reference backend runs both on every call; the compiled
kernels check each index they use instead and report a bad one as an error.
"""
from __future__ import annotations

import torch

from . import layouts

#: dtypes a format may hold as values.
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)

#: Largest M and K of a sparse weight: the formats' int32 indices (BSR block columns, CSC
#: rows) and the kernels' index arithmetic reach no further.
MAX_DIM = 2**31 - 1


def shape_of(t: torch.Tensor):
    return list(t.shape)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def semi24_padded_k(K: int) -> int:
    """K rounded up to a whole number of groups of 4."""
    return ceil_div(K, 4) * 4


def semi24_meta_cols(K: int) -> int:
    """Bytes of 2:4 metadata per row: one nibble per group of 4, two groups per byte."""
    return ceil_div(ceil_div(K, 4), 2)


def check_layout(layout, arg: str = "layout") -> None:
    """ValueError naming ``arg`` unless ``layout`` is a registered layout."""
    layouts.get(layout, arg)


def __getattr__(name):
    if name == "LAYOUTS":  # the registered layout names (derived: see formats/layouts.py)
        return layouts.names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check_format_meta(values: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor,
                      M, K, layout: str) -> None:
    """Check the format tensors' ranks, shapes, dtypes and devices; O(1)."""
    lay = layouts.get(layout)
    for name, t in (("values", values), ("indices", indices), ("offsets", offsets)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.layout != torch.strided:
            raise TypeError(f"{name} must be a dense (strided) tensor, got layout {t.layout}")
    if M < 0 or K < 0:
        raise ValueError(f"M and K must be >= 0, got M={M}, K={K}")
    if M > MAX_DIM or K > MAX_DIM:
        raise ValueError(f"M={M}, K={K}: sizes above 2^31 - 1 = {MAX_DIM} are not served (the "
                         f"formats' int32 indices cannot address them); expected M, K <= {MAX_DIM}")
    if values.dtype not in FLOAT_DTYPES:
        raise TypeError(f"values has dtype {values.dtype}; expected one of float32, float16, "
                        f"bfloat16, float64")
    for name, t in (("indices", indices), ("offsets", offsets)):
        if t.device != values.device:
            raise ValueError(f"{name} is on {t.device} but values is on {values.device}; "
                             f"all format tensors must be on one device")
    lay.check_meta(values, indices, offsets, M, K)


def _offsets_end(offsets: torch.Tensor) -> str:
    """'; offsets[-1] = n' for an error message, '' when offsets cannot say (not a non-empty
    1-D integer tensor, or one without data: meta, fake under torch.compile). One element
    read, on the error path only."""
    from torch._subclasses.fake_tensor import is_fake
    if offsets.dim() != 1 or offsets.numel() == 0 or offsets.dtype.is_floating_point or \
            offsets.dtype.is_complex or offsets.is_meta or is_fake(offsets):
        return ""
    return f"; offsets[-1] = {int(offsets[-1].item())}"


def check_one_index_each(layout: str, values: torch.Tensor, indices: torch.Tensor,
                         offsets: torch.Tensor, stored: str, index: str) -> None:
    """ValueError naming both tensors and what offsets say when ``values`` (its ``stored``
    entries, e.g. "values") and ``indices`` (its ``index`` entries) differ in length: a
    message about indices alone blamed it for a short values."""
    n_values, n_indices = values.shape[0], indices.shape[0]
    if n_values == n_indices:
        return
    raise ValueError(f"{layout} values has shape {shape_of(values)} but indices has shape "
                     f"{shape_of(indices)}: {n_values} {stored}, {n_indices} {index}"
                     f"{_offsets_end(offsets)}; expected as many {index} as {stored}, the "
                     f"number stored (offsets[-1])")


def first_bad(mask: torch.Tensor) -> int:
    return int(mask.nonzero()[0, 0].item())


def check_offsets(offsets: torch.Tensor, total: int, what: str, column: int = None,
                  counted: str = "stored entries") -> None:
    """Offsets start at 0, never decrease and end at ``total`` (the number of ``counted``);
    with ``column``, those of ``offsets[:, column]`` (a 2-D offsets tensor)."""
    o = (offsets if column is None else offsets[:, column]).long()
    c = "" if column is None else f", {column}"
    name = "offsets" if column is None else f"offsets[:{c}]"
    if int(o[0].item()) != 0:
        raise ValueError(f"{what} {name} must start at 0, got offsets[0{c}]={int(o[0].item())}")
    if int(o[-1].item()) != total:
        raise ValueError(f"{what} {name} must end at the number of {counted} {total}, "
                         f"got offsets[-1{c}]={int(o[-1].item())}")
    if o.numel() > 1:
        dec = o[1:] < o[:-1]
        if bool(dec.any()):
            i = first_bad(dec)
            raise ValueError(f"{what} {name} must not decrease: offsets[{i + 1}{c}]="
                             f"{int(o[i + 1].item())} < offsets[{i}{c}]={int(o[i].item())}")


def check_indices_range(indices: torch.Tensor, bound: int, what: str) -> None:
    """Every index is in [0, bound)."""
    if indices.numel() == 0:
        return
    idx = indices.long()
    bad = (idx < 0) | (idx >= bound)
    if bool(bad.any()):
        i = first_bad(bad)
        raise ValueError(f"{what} indices[{i}]={int(idx[i].item())} is out of range; "
                         f"expected 0 <= index < {bound}")


def check_format_structure(values: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor,
                           M: int, K: int, layout: str) -> None:
    """Read the index tensors and reject any entry a kernel could not use safely."""
    layouts.get(layout).check_structure(values, indices, offsets, M, K)


def validate_format(values, indices, offsets, M: int, K: int, layout: str) -> None:
    """Both checks; what a format's constructor runs."""
    check_format_meta(values, indices, offsets, M, K, layout)
    for name, t in (("values", values), ("indices", indices), ("offsets", offsets)):
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous, got strides {list(t.stride())}")
    check_format_structure(values, indices, offsets, M, K, layout)
