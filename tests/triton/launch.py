"""The layout's Triton kernel run into a caller-given output (the private entry points the
Triton backend calls), for tests that check what the kernels write and where."""


def launch_into(A, layout, M, K, B, bias, out, split_k):
    """Runs ``A @ B + bias`` for the packed ``A`` ([M, K], ``layout``) into ``out`` ([M, N],
    any strides) with ``split_k`` splits."""
    from sparsekern.triton import build_row_strips, triton_bsr, triton_csc, triton_semi24
    values, indices, offsets, *_ = A.op_args()
    if layout == "bsr":
        triton_bsr(values, indices, offsets, M, K, B, bias, out, split_k)
    elif layout == "2:4":
        triton_semi24(values, indices, M, K, B, bias, out, split_k)
    else:
        s = build_row_strips(values, indices, offsets, M, K)
        triton_csc(s.values, s.cols, s.rows, s.ptr, M, K, B, bias, out, split_k)
