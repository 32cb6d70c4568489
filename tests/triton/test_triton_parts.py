"""The pieces around the kernels: configurations, split-K choice, CSC repack, GPU dispatch
order, and the GPU self-timing script (dry run on CPU)."""
import pytest
import torch

import sparsekern as sk
from sparsekern.backends import gpu_choice
from sparsekern.triton import configs
from sparsekern.triton.csc_strips import ALIGN, STRIP_ROWS, build_row_strips
from tests.helpers import random_pattern_weight


def test_interpreter_uses_one_small_config():
    assert configs.is_interpreter()
    for kernel in ("bsr", "semi24", "csc"):
        for reg in ("decode", "small", "large"):
            cfgs = configs.kernel_configs(kernel, reg, 16, 16)
            assert len(cfgs) == 1 and cfgs[0].kwargs["BN"] == 16


@pytest.mark.parametrize("reg", ["decode", "small", "large"])
@pytest.mark.parametrize("block", [(64, 64), (16, 16), (128, 128), (8, 1), (1, 8), (24, 40)])
def test_gpu_bsr_configs_are_valid_tiles(monkeypatch, reg, block):
    monkeypatch.setattr(configs, "is_interpreter", lambda: False)
    cfgs = configs.kernel_configs("bsr", reg, *block)
    assert cfgs
    for c in cfgs:
        BM, BK, BN = c.kwargs["BM"], c.kwargs["BK"], c.kwargs["BN"]
        for t in (BM, BK, BN):
            assert t >= 16 and t & (t - 1) == 0  # tl.dot wants powers of two >= 16
        assert BM <= max(16, 1 << (block[0] - 1).bit_length())  # no tile taller than needed
        if reg == "decode":
            assert BN == 16


@pytest.mark.parametrize("kernel", ["semi24", "csc"])
@pytest.mark.parametrize("reg", ["decode", "small", "large"])
def test_gpu_configs_exist(monkeypatch, kernel, reg):
    monkeypatch.setattr(configs, "is_interpreter", lambda: False)
    cfgs = configs.kernel_configs(kernel, reg)
    assert cfgs and all(c.kwargs["BN"] >= 16 for c in cfgs)


def test_kernel_configs_rejects_unknown_names():
    with pytest.raises(ValueError, match=r"kernel must be one of"):
        configs.kernel_configs("coo", "decode")
    with pytest.raises(ValueError, match=r"reg must be 'decode', 'small' or 'large', got 'huge'"):
        configs.kernel_configs("csc", "huge")


def test_choose_split_k():
    # Enough tiles: no split.
    assert configs.choose_split_k(1000, 64, 132, "csc", "decode") == 1
    assert configs.choose_split_k(256, 64, 132, "semi24", "decode") == 1
    # Few tiles, long K: split up to the target of programs per SM.
    s = configs.choose_split_k(16, 64, 132, "semi24", "decode")
    assert s == min(configs.MAX_SPLIT_K, -(-2 * 132 // 16))
    # CSC decode programs carry little in flight: it splits even 256 strips.
    assert configs.choose_split_k(256, 64, 132, "csc", "decode") > 1
    # Short K: never below MIN_STEPS_PER_SPLIT steps per split.
    assert configs.choose_split_k(tiles=4, k_steps=3, sms=132) == 1
    assert configs.choose_split_k(tiles=4, k_steps=8, sms=132) <= 8 // configs.MIN_STEPS_PER_SPLIT
    assert configs.choose_split_k(tiles=0, k_steps=8, sms=132) == 1


def test_regime_and_n_class():
    assert [configs.regime(n) for n in (1, 16, 17, 128, 129)] == \
        ["decode", "decode", "small", "small", "large"]
    assert [configs.n_class(n) for n in (1, 3, 16, 17, 10**6)] == [1, 4, 16, 32, 4096]


def test_needs_int64():
    assert not configs.needs_int64(torch.empty(4, 5), torch.empty(5, 3).t())
    big = torch.empty(1, 1).expand(2**16, 2**16)  # strides 0: no large offsets
    assert not configs.needs_int64(big)
    assert configs.needs_int64(torch.empty_strided((2, 2), (2**31, 1), device="meta"))


@pytest.mark.parametrize("M,K", [(37, 50), (16, 16), (5, 3), (100, 40000)])
def test_row_strips_hold_exactly_the_csc_entries(M, K):
    W = random_pattern_weight(M, K, "csc", density=0.05 if K > 1000 else 0.3)
    A = sk.to_sparse(W, "csc")
    s = build_row_strips(*A.op_args()[:3], M, K)
    assert s.cols.dtype == (torch.int16 if K <= 32767 else torch.int32)
    assert s.rows.dtype == torch.uint8 and s.ptr.dtype == torch.int32
    assert s.ptr.shape == (-(-M // STRIP_ROWS) + 1,)
    assert (s.ptr % ALIGN == 0).all() and (s.ptr[1:] >= s.ptr[:-1]).all()
    # Rebuild the dense weight from the strips: padding (row STRIP_ROWS) adds nothing.
    dense = torch.zeros(M + STRIP_ROWS, K, dtype=W.dtype)
    strip_of = torch.repeat_interleave(torch.arange(s.ptr.numel() - 1),
                                       (s.ptr[1:] - s.ptr[:-1]).long())
    real = s.rows.long() < STRIP_ROWS
    assert int(real.sum()) == A.values.numel()
    rows = strip_of * STRIP_ROWS + s.rows.long()
    dense.index_put_((rows[real], s.cols.long()[real]), s.values[real], accumulate=True)
    assert torch.equal(dense[:M], W)
    assert (s.values[~real] == 0).all()


def test_gpu_order_is_the_static_entry_order():
    assert gpu_choice.gpu_order("bsr") == ["triton", "cuda"]
    assert gpu_choice.gpu_order("2:4") == ["cuda", "triton"]
    assert gpu_choice.gpu_order("csc", 4096, 4096, 1, torch.float16) == ["cuda", "triton"]
    # CSC past decode sizes: Triton's strips first.
    assert gpu_choice.gpu_order("csc", 4096, 4096, 64, torch.float16) == ["triton", "cuda"]


def test_selftime_imports_without_gpu_and_refuses_cpu():
    from sparsekern.bench import triton_selftime as selftime
    assert {c[0] for c in selftime.CASES} == {"bsr", "2:4", "csc"}
    with pytest.raises(RuntimeError, match=r"needs a CUDA device"):
        selftime.time_triton_kernels(device="cpu")


@pytest.mark.usefixtures("triton_available")
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("layout", ["bsr", "2:4", "csc"])
def test_selftime_case_dry_run_on_cpu(monkeypatch, layout):
    """The timing code path on CPU with the interpreter (timers stubbed): no Python errors."""
    from sparsekern.bench import triton_selftime as selftime
    monkeypatch.setattr(selftime, "_median_ms", lambda fn: (fn(), 1.0)[1])
    monkeypatch.setattr(selftime, "_graph_median_ms", lambda fn: (fn(), 0.5)[1])
    monkeypatch.setattr(selftime, "_copies", lambda nbytes, device: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "cpu (dry run)")
    row = selftime._time_case(layout, 64, 64, 2, torch.float32, torch.device("cpu"))
    assert row["rel_err"] < 1e-5 and row["speedup"] == 1.0
    assert row["split_k"] >= 1 and row["config"]
    table = selftime.format_table([row, {"layout": "csc", "M": 1, "K": 1, "N": 1,
                                         "error": "boom"}])
    assert "ERROR boom" in table


def test_interpreter_index_fix_converts_one_element_arrays(monkeypatch):
    """Triton <= 3.6's interpreter + numpy >= 2.4: __index__ of a shape-(1,) scalar works."""
    import types

    import numpy as np
    from triton.runtime import interpreter as interp

    class Scope:
        def __init__(self):
            self.attrs = {}

        def set_attr(self, obj, name, value):
            self.attrs[name] = value

    def old_patch(tensor, scope):  # what triton 3.6 installs
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data))

    monkeypatch.setattr(interp, "_patch_lang_tensor", old_patch)
    monkeypatch.setattr(configs.triton, "__version__", "3.6.0")
    monkeypatch.setattr(np, "__version__", "2.4.0")
    assert configs._interpreter_index_fix()
    scope = Scope()
    interp._patch_lang_tensor(object, scope)
    scalar = types.SimpleNamespace(handle=types.SimpleNamespace(data=np.array([7], np.int32)))
    assert scope.attrs["__index__"](scalar) == 7
    block = types.SimpleNamespace(handle=types.SimpleNamespace(data=np.arange(3)))
    with pytest.raises(TypeError, match="only scalar tensors"):
        scope.attrs["__index__"](block)
    assert not configs._interpreter_index_fix()  # installed once
    monkeypatch.setattr(configs.triton, "__version__", "3.9.0")
    monkeypatch.setattr(interp, "_patch_lang_tensor", old_patch)
    assert not configs._interpreter_index_fix()  # fixed upstream: left alone
