"""torch.ops.sparsekern.attention: the fused CPU kernel against the float64 reference formula
(sparsekern.backends.reference.attention) on every ISA the machine has, its output contract,
masks (bool, additive, broadcast, expanded, all-masked rows: 0, as sdpa), edge sizes, argument checks (C++
and fake impl), opcheck, autograd, torch.compile and threads.

Random cases draw a fresh seed each run; a failure names it (SPARSEKERN_TEST_SEED=<seed>
replays it).
"""
from __future__ import annotations

import os
import random

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import sparsekern  # registers the op
from sparsekern.backends import reference
from tests.helpers import cpu_isas as _isas  # ["native"]: the tests skip

op = torch.ops.sparsekern.attention

SQ = (1, 5, 16, 31, 64, 65, 130)
SK = (1, 3, 64, 100)
DS = (8, 16, 24, 32, 64)
DVS = (1, 5, 8, 16, 24, 33, 40, 64, 80)  # Dv != D in most cases (Dv = D in some, too)
HKVS = (1, 2, 3, 6)
LAYOUTS = ("contiguous", "token_major", "feature_major", "slice", "expanded_heads")
MASKS = ("none", "bool_pad", "bool_full", "float_b1qk", "float_qk", "float_k", "expanded",
         "bool_expanded")
DTYPES = (torch.float32, torch.float32, torch.float32, torch.float64, torch.bfloat16,
          torch.float16)
TOL = {torch.float32: 2e-5, torch.float64: 1e-10, torch.bfloat16: 3e-2, torch.float16: 3e-2}


def _need_kernel():
    try:
        torch.ops.sparsekern._cpu_isa()
    except (AttributeError, RuntimeError) as e:
        pytest.skip(f"the compiled CPU kernels are not loaded: {e}")


def _seed() -> int:
    env = os.environ.get("SPARSEKERN_TEST_SEED")
    return int(env) if env else random.SystemRandom().randrange(1 << 30)


def _tensor(g: torch.Generator, B: int, H: int, S: int, D: int, layout: str,
            dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[B, H, S, D] of `dtype` (unit-scale random) in one of the memory layouts callers pass
    (drawn in `dtype` first, then viewed: a .to() afterwards would copy it contiguous)."""

    def randn(*shape):
        return torch.randn(*shape, generator=g).to(dtype)

    if layout == "contiguous":
        t = randn(B, H, S, D)
    elif layout == "token_major":  # what Hugging Face models pass: [B, S, H, D] viewed
        t = randn(B, S, H, D).transpose(1, 2)
    elif layout == "feature_major":  # a sparsekern SparseLinear's output, column-major
        t = randn(H * D, B * S).t().reshape(B, S, H, D).transpose(1, 2)
    elif layout == "slice":  # every other head dim, offset rows: no unit stride anywhere
        t = randn(B, H, S + 2, 2 * D + 1)[:, :, 1:S + 1, 1::2]
    elif layout == "expanded_heads":  # one head shared by all (stride 0)
        t = randn(B, 1, S, D).expand(B, H, S, D)
    else:
        raise AssertionError(layout)
    assert t.shape == (B, H, S, D) and t.dtype == dtype, (layout, t.shape)
    return t


def _keep_one(keep: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """keep (bool [..., Sk]) with one random True set in every row."""
    Sk = keep.shape[-1]
    j = torch.randint(0, Sk, keep.shape[:-1] + (1,), generator=g)
    return keep.scatter(-1, j, True)


def _mask(g: torch.Generator, kind: str, B, H, Sq, Sk, dtype):
    """attn_mask of `kind`: None, bool (each row keeps a key) or additive of `dtype`."""
    if kind == "none":
        return None
    if kind == "bool_pad":  # key padding [B, 1, 1, Sk]
        return _keep_one(torch.rand(B, 1, 1, Sk, generator=g) < 0.6, g)
    if kind == "bool_full":
        return _keep_one(torch.rand(B, H, Sq, Sk, generator=g) < 0.5, g)
    if kind == "float_b1qk":
        return torch.randn(B, 1, Sq, Sk, generator=g).to(dtype)
    if kind == "float_qk":
        return torch.randn(Sq, Sk, generator=g).to(dtype)
    if kind == "float_k":
        return torch.randn(Sk, generator=g).to(dtype)
    if kind == "expanded":  # stride 0 over heads and query rows, as a view
        return torch.randn(B, 1, 1, Sk, generator=g).to(dtype).expand(B, H, Sq, Sk)
    if kind == "bool_expanded":  # stride 0 over batch and heads
        return _keep_one(torch.rand(1, 1, Sq, Sk, generator=g) < 0.5, g).expand(B, H, Sq, Sk)
    raise AssertionError(kind)


def _ref64(q, k, v, mask, scale):
    """The reference formula on float64 copies."""
    m = None if mask is None else (mask if mask.dtype == torch.bool else mask.double())
    s = q.shape[-1] ** -0.5 if scale is None else scale
    return reference.attention(q.double(), k.double(), v.double(), m, s)


def _agree(out: torch.Tensor, ref: torch.Tensor, tol: float, what: str) -> None:
    assert out.shape == ref.shape, f"shape {tuple(out.shape)} != {tuple(ref.shape)}: {what}"
    o, r = out.double(), ref.double()
    assert torch.equal(o.isnan(), r.isnan()), (
        f"NaN positions differ ({int(o.isnan().sum())} vs {int(r.isnan().sum())}): {what}")
    fin = ~r.isnan()
    assert torch.equal(o[fin].isfinite(), r[fin].isfinite()), f"Inf positions differ: {what}"
    if fin.any():
        err = (o[fin] - r[fin]).abs().max().item()
        assert err <= tol, f"max abs error {err:.3g} > {tol:.1g}: {what}"


def _check_contract(out, q, v, what):
    B, H, Sq, _ = q.shape
    assert out.shape == (B, H, Sq, v.shape[3]), f"shape {tuple(out.shape)}: {what}"
    assert out.dtype == q.dtype, f"dtype {out.dtype}: {what}"
    assert out.transpose(1, 2).is_contiguous(), f"strides {out.stride()}: {what}"


def _spread(rng: random.Random, options, n: int):
    """n choices from options, each option at least once when n >= len(options)."""
    out = [options[i % len(options)] for i in range(n)]
    rng.shuffle(out)
    return out


# ---- accuracy against the reference -------------------------------------------------------

@pytest.mark.parametrize("isa", _isas())
def test_matches_float64_reference(isa, cpu_isa_env):
    _need_kernel()
    cpu_isa_env(isa)
    assert torch.ops.sparsekern._cpu_isa() == isa
    seed = _seed()
    rng = random.Random(seed)
    sizes = [(sq, sk) for sq in SQ for sk in SK] * 4
    n = len(sizes)
    cols = {name: _spread(rng, opts, n) for name, opts in (
        ("D", DS), ("Dv", DVS), ("Hkv", HKVS), ("mask", MASKS), ("dtype", DTYPES),
        ("lq", LAYOUTS), ("lk", LAYOUTS), ("lv", LAYOUTS), ("B", (1, 2, 3)),
        ("scale", (None, None, 0.3)))}
    rng.shuffle(sizes)
    H = 6
    for case, (Sq, Sk) in enumerate(sizes):
        c = {name: col[case] for name, col in cols.items()}
        D, Hkv, B, dtype, scale = c["D"], c["Hkv"], c["B"], c["dtype"], c["scale"]
        Dv = c["Dv"] if rng.random() < 0.8 else D
        g = torch.Generator().manual_seed(rng.randrange(1 << 30))
        q = _tensor(g, B, H, Sq, D, c["lq"], dtype)
        k = _tensor(g, B, Hkv, Sk, D, c["lk"], dtype)
        v = _tensor(g, B, Hkv, Sk, Dv, c["lv"], dtype)
        mask_dtype = torch.float32 if dtype != torch.float64 and rng.random() < 0.3 else dtype
        mask = _mask(g, c["mask"], B, H, Sq, Sk, mask_dtype)
        what = (f"seed {seed} case {case}: isa {isa} {dtype} B={B} H={H} Hkv={Hkv} Sq={Sq} "
                f"Sk={Sk} D={D} Dv={Dv} scale={scale} q {c['lq']} {tuple(q.stride())} "
                f"k {c['lk']} {tuple(k.stride())} v {c['lv']} {tuple(v.stride())} "
                f"mask {c['mask']} "
                f"{None if mask is None else (tuple(mask.shape), mask.dtype, mask.stride())}")
        out = op(q, k, v, mask, scale)
        _check_contract(out, q, v, what)
        _agree(out, _ref64(q, k, v, mask, scale), TOL[dtype], what)


@pytest.mark.parametrize("isa", _isas())
def test_few_query_rows_against_a_cache(isa, cpu_isa_env):
    """1-4 query rows (decoding against a key/value cache: the row-by-row vector path, taken
    when k and v are contiguous over head dims and D, Dv are whole vectors) and block tails of
    1-4 rows (Sq = 65, 66, 130), with grouped heads, masks and all-masked rows."""
    _need_kernel()
    cpu_isa_env(isa)
    seed = _seed()
    g = torch.Generator().manual_seed(seed)
    for Sq, Sk, D, Dv, Hkv, kind in ((1, 1, 16, 16, 2, "none"), (1, 300, 64, 64, 1, "float_k"),
                                     (2, 77, 128, 64, 2, "bool_full"),
                                     (3, 40, 32, 48, 4, "float_b1qk"), (4, 129, 64, 128, 2, "none"),
                                     (65, 65, 64, 64, 4, "bool_pad"), (66, 9, 32, 32, 1, "float_qk"),
                                     (130, 130, 16, 32, 2, "none"), (1, 50, 24, 40, 4, "none")):
        B, H = 2, 4
        q = torch.randn(B, H, Sq, D, generator=g)
        k = torch.randn(B, Hkv, Sk, D, generator=g)
        v = torch.randn(B, Hkv, Sk, Dv, generator=g)
        mask = _mask(g, kind, B, H, Sq, Sk, torch.float32)
        what = f"seed {seed}, isa {isa}, Sq {Sq}, Sk {Sk}, D {D}, Dv {Dv}, Hkv {Hkv}, mask {kind}"
        out = op(q, k, v, mask, None)
        _check_contract(out, q, v, what)
        _agree(out, _ref64(q, k, v, mask, None), TOL[torch.float32], what)
    # a row whose keys are all masked is 0 (as scaled_dot_product_attention), the others not
    q, k, v = torch.randn(1, 2, 3, 32), torch.randn(1, 2, 20, 32), torch.randn(1, 2, 20, 32)
    mask = torch.ones(1, 1, 3, 20, dtype=torch.bool)
    mask[..., 1, :] = False
    out = op(q, k, v, mask, None)
    assert (out[:, :, 1] == 0).all() and (out[:, :, 0::2] != 0).any(), f"isa {isa}"
    _agree(out, _ref64(q, k, v, mask, None), TOL[torch.float32], f"all-masked row, isa {isa}")
    sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    _agree(out, sdpa, TOL[torch.float32], f"all-masked row vs sdpa, isa {isa}")


@pytest.mark.parametrize("isa", _isas())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_fully_masked_rows_are_zero(isa, dtype, cpu_isa_env):
    """A row with no key taking part is 0 (as scaled_dot_product_attention gives), only that
    row; rows with a key left are right; a NaN in such a row's query still gives NaN. Bool
    masks, and additive -inf masks (row-varying and key padding), over the vector block sizes
    (Sq 130: two and a half blocks of 64 rows) and the few-rows path (Sq 3)."""
    _need_kernel()
    cpu_isa_env(isa)
    assert torch.ops.sparsekern._cpu_isa() == isa
    seed = _seed()
    g = torch.Generator().manual_seed(seed)
    for B, H, Hkv, Sq, Sk, D, Dv, dead in (
            (2, 4, 2, 130, 37, 16, 24, [(0, 0, 0), (0, 1, 63), (0, 3, 64), (1, 2, 129),
                                        (1, 0, 70)]),
            (2, 4, 2, 3, 37, 16, 32, [(0, 0, 0), (1, 3, 2)])):
        q = _tensor(g, B, H, Sq, D, "token_major" if Sq > 3 else "contiguous", dtype)
        k = _tensor(g, B, Hkv, Sk, D, "contiguous", dtype)
        v = _tensor(g, B, Hkv, Sk, Dv, "feature_major" if Sq > 3 else "contiguous", dtype)
        keep = _keep_one(torch.rand(B, H, Sq, Sk, generator=g) < 0.5, g)
        for b, h, i in dead:
            keep[b, h, i] = False
        add = torch.zeros(B, H, Sq, Sk, dtype=dtype).masked_fill(~keep, float("-inf"))
        pad = torch.ones(B, 1, 1, Sk, dtype=torch.bool)
        pad[1] = False  # every row of batch 1 masked
        pad_add = torch.zeros(B, 1, 1, Sk, dtype=dtype).masked_fill(~pad, float("-inf"))
        for name, mask in (("bool", keep), ("additive -inf", add), ("bool key padding", pad),
                           ("additive key padding", pad_add)):
            what = f"seed {seed}: isa {isa} {dtype} Sq {Sq} {name} mask"
            out = op(q, k, v, mask, None)
            ref = _ref64(q, k, v, mask, None)
            expect = torch.zeros(B, H, Sq, dtype=torch.bool)
            if "padding" in name:
                expect[1] = True
            else:
                for b, h, i in dead:
                    expect[b, h, i] = True
            assert torch.equal((ref == 0).all(-1), expect), what
            assert not ref.isnan().any(), what
            _agree(out, ref, TOL[dtype], what)
            if dtype != torch.bfloat16:  # sdpa's own bf16 rounding differs
                sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                                        enable_gqa=True)
                _agree(out, sdpa, TOL[dtype] * 10, what + " vs sdpa")
        # a NaN score in a fully masked row: NaN there (as sdpa), nothing else changes
        b, h, i = dead[0]
        qn = q.clone()
        qn[b, h, i, 0] = float("nan")
        out = op(qn, k, v, keep, None)
        assert out[b, h, i].isnan().all(), f"seed {seed}: isa {isa} {dtype} NaN row"
        assert out.isnan().sum() == out.shape[-1], f"seed {seed}: isa {isa} {dtype} NaN spread"


@pytest.mark.parametrize("isa", _isas())
def test_hf_min_masks_are_finite(isa, cpu_isa_env):
    """Hugging Face's masks: 0 / torch.finfo(float32).min, key padding and causal + padding,
    rows that mask every key included (the reference gives those a uniform average)."""
    _need_kernel()
    cpu_isa_env(isa)
    seed = _seed()
    g = torch.Generator().manual_seed(seed)
    B, H, Sq, Sk, D = 3, 4, 65, 65, 32
    q = _tensor(g, B, H, Sq, D, "token_major")
    k = _tensor(g, B, H, Sk, D, "token_major")
    v = _tensor(g, B, H, Sk, D, "token_major")
    lo = torch.finfo(torch.float32).min
    attn = torch.ones(B, Sk, dtype=torch.bool)
    attn[1, 40:] = False
    attn[2, :10] = False  # left padding: causal rows 0..9 see no key
    pad = torch.zeros(B, 1, 1, Sk).masked_fill(~attn[:, None, None, :], lo)
    causal = torch.ones(Sq, Sk, dtype=torch.bool).tril()
    both = torch.zeros(B, 1, Sq, Sk).masked_fill(~(causal & attn[:, None, None, :]), lo)
    for name, mask in (("padding", pad), ("causal + padding", both)):
        what = f"seed {seed}: isa {isa} HF {name} mask"
        out = op(q, k, v, mask, None)
        assert out.isfinite().all(), what
        _agree(out, _ref64(q, k, v, mask, None), TOL[torch.float32], what)


def test_scale_explicit_and_default():
    _need_kernel()
    g = torch.Generator().manual_seed(_seed())
    q, k, v = (torch.randn(2, 3, 9, 24, generator=g) for _ in range(3))
    for scale in (0.3, 1.0, -0.5, 0.0, 24 ** -0.5):
        _agree(op(q, k, v, None, scale), _ref64(q, k, v, None, scale), 2e-5, f"scale {scale}")
    assert torch.equal(op(q, k, v, None, None), op(q, k, v, None, 24 ** -0.5))
    _agree(op(q, k, v, None, None), _ref64(q, k, v, None, 24 ** -0.5), 2e-5, "default scale")
    # the Python entry point is the same op
    assert torch.equal(sparsekern._attention.attention(q, k, v, None, 0.3), op(q, k, v, None, 0.3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_empty_sizes(dtype):
    _need_kernel()
    D = 8

    def run(B, H, Hkv, Sq, Sk, Dv, mask=None):
        q = torch.randn(B, H, Sq, D).to(dtype)
        k = torch.randn(B, Hkv, Sk, D).to(dtype)
        v = torch.randn(B, Hkv, Sk, Dv).to(dtype)
        out = op(q, k, v, mask, None)
        _check_contract(out, q, v, f"B={B} H={H} Sq={Sq} Sk={Sk} Dv={Dv}")
        return out, q, k, v

    for B, Sq, Dv in ((0, 5, 4), (2, 0, 4), (2, 5, 0), (0, 0, 0)):
        out, *_ = run(B, 4, 2, Sq, 7, Dv)
        assert out.numel() == 0
    out, q, k, v = run(2, 4, 2, 5, 0, 6)  # no keys: a sum over nothing is 0
    assert torch.equal(out, torch.zeros(2, 4, 5, 6, dtype=dtype))
    assert torch.equal(out, reference.attention(q, k, v, None, D ** -0.5))
    out, *_ = run(2, 4, 2, 5, 0, 6, mask=torch.zeros(2, 1, 5, 0, dtype=torch.bool))
    assert torch.equal(out, torch.zeros(2, 4, 5, 6, dtype=dtype))


# ---- argument checks ----------------------------------------------------------------------

def _args(**over):
    """Valid arguments (B 2, H 6, Hkv 3, Sq 5, Sk 7, D 8, Dv 4) with some replaced."""
    a = dict(query=torch.randn(2, 6, 5, 8), key=torch.randn(2, 3, 7, 8),
             value=torch.randn(2, 3, 7, 4), attn_mask=None, scale=None)
    a.update(over)
    return a


REJECTIONS = [
    ("query 3-D", _args(query=torch.randn(2, 5, 8)),
     r"query must be 4-D \[batch, heads, sequence, head_dim\]; got shape \[2, 5, 8\]"),
    ("key 5-D", _args(key=torch.randn(2, 3, 7, 8, 1)), r"key must be 4-D .*got shape"),
    ("value 2-D", _args(value=torch.randn(7, 4)), r"value must be 4-D .*got shape"),
    ("key dtype", _args(key=torch.randn(2, 3, 7, 8, dtype=torch.float64)),
     r"key must have query's dtype"),
    ("value dtype", _args(value=torch.randn(2, 3, 7, 4).bfloat16()),
     r"value must have query's dtype"),
    ("int dtype", _args(query=torch.ones(2, 6, 5, 8, dtype=torch.int32),
                        key=torch.ones(2, 3, 7, 8, dtype=torch.int32),
                        value=torch.ones(2, 3, 7, 4, dtype=torch.int32)),
     r"query must be float32, float64, bfloat16 or float16; got"),
    ("key batch", _args(key=torch.randn(3, 3, 7, 8)),
     r"key and value must have query's batch size 2; got key \[3, 3, 7, 8\]"),
    ("value batch", _args(value=torch.randn(1, 3, 7, 4)),
     r"key and value must have query's batch size 2; got key .*, value \[1, 3, 7, 4\]"),
    ("value heads", _args(value=torch.randn(2, 2, 7, 4)),
     r"value must have key's heads and length \[3, 7\]; got value \[2, 2, 7, 4\]"),
    ("value length", _args(value=torch.randn(2, 3, 6, 4)),
     r"value must have key's heads and length \[3, 7\]"),
    ("heads not a multiple", _args(key=torch.randn(2, 4, 7, 8), value=torch.randn(2, 4, 7, 4)),
     r"query's heads \(6\) must be a multiple of key's heads \(4\)"),
    ("no key heads", _args(key=torch.randn(2, 0, 7, 8), value=torch.randn(2, 0, 7, 4)),
     r"query's heads \(6\) must be a multiple of key's heads \(0\)"),
    ("key head dim", _args(key=torch.randn(2, 3, 7, 9)),
     r"key's head dim must be query's \(8\); got key \[2, 3, 7, 9\]"),
    ("head dim 0", _args(query=torch.randn(2, 6, 5, 0), key=torch.randn(2, 3, 7, 0)),
     r"query's head dim \(query.size\(-1\)\) must be at least 1; got 0"),
    ("scale inf", _args(scale=float("inf")), r"scale must be finite; got inf"),
    ("scale -inf", _args(scale=float("-inf")), r"scale must be finite; got -inf"),
    ("scale nan", _args(scale=float("nan")), r"scale must be finite; got nan"),
    ("mask int", _args(attn_mask=torch.ones(2, 1, 1, 7, dtype=torch.int64)),
     r"attn_mask must be bool or floating point; got"),
    ("mask length", _args(attn_mask=torch.zeros(5, 8)),
     r"attn_mask of shape \[5, 8\] does not broadcast to \[batch, heads, query length, key "
     r"length\] = \[2, 6, 5, 7\]"),
    ("mask heads", _args(attn_mask=torch.zeros(2, 3, 5, 7, dtype=torch.bool)),
     r"attn_mask of shape \[2, 3, 5, 7\] does not broadcast"),
    ("mask 5-D", _args(attn_mask=torch.zeros(1, 2, 6, 5, 7)),
     r"attn_mask of shape \[1, 2, 6, 5, 7\] does not broadcast"),
]


@pytest.mark.parametrize("path", ["cpu", "fake"])
@pytest.mark.parametrize("name,args,match", REJECTIONS, ids=[r[0] for r in REJECTIONS])
def test_rejections(name, args, match, path):
    """The C++ checks (ValueError via TORCH_CHECK_VALUE) and the fake impl's Python checks
    reject the same calls with the same message, naming the argument."""
    if path == "cpu":
        _need_kernel()
        with pytest.raises(ValueError, match="sparsekern.attention: " + match):
            op(**args)
        return
    with FakeTensorMode() as mode:
        fa = {k: mode.from_tensor(t) if isinstance(t, torch.Tensor) else t
              for k, t in args.items()}
        with pytest.raises(ValueError, match="sparsekern.attention: " + match):
            op(**fa)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("shape", [(2, 6, 3, 5, 7, 8, 4), (2, 1, 1, 1, 3, 16, 16),
                                   (1, 4, 4, 0, 7, 8, 4), (3, 2, 1, 5, 7, 8, 0),
                                   (2, 4, 2, 5, 0, 8, 3)])
def test_fake_matches_real_shape_and_strides(shape, dtype):
    _need_kernel()
    B, H, Hkv, Sq, Sk, D, Dv = shape
    q = torch.randn(B, Sq, H, D).transpose(1, 2).to(dtype)
    k = torch.randn(Hkv * D, B * Sk).t().reshape(B, Sk, Hkv, D).transpose(1, 2).to(dtype)
    v = torch.randn(B, Hkv, Sk, Dv).to(dtype)
    mask = torch.zeros(B, 1, 1, Sk, dtype=torch.bool) if Sk else None
    real = op(q, k, v, mask, None)
    with FakeTensorMode() as mode:
        fake = op(*(mode.from_tensor(t) for t in (q, k, v)),
                  None if mask is None else mode.from_tensor(mask), None)
    assert fake.shape == real.shape == (B, H, Sq, Dv)
    assert fake.dtype == real.dtype == dtype
    assert fake.stride() == real.stride(), (fake.stride(), real.stride())


# ---- opcheck, autograd, compile, threads --------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", ["float_mask_grad", "bool_mask_gqa", "no_mask_token_major"])
def test_opcheck(case, dtype):
    _need_kernel()
    g = torch.Generator().manual_seed(0)
    if case == "float_mask_grad":
        q, k, v = (torch.randn(2, 2, 3, 4, generator=g) for _ in range(3))
        mask = torch.randn(2, 1, 3, 3, generator=g)
        args = [t.to(dtype).requires_grad_() for t in (q, k, v, mask)] + [None]
    elif case == "bool_mask_gqa":
        q = torch.randn(1, 4, 5, 8, generator=g).to(dtype).requires_grad_()
        k = torch.randn(1, 2, 6, 8, generator=g).to(dtype).requires_grad_()
        v = torch.randn(1, 2, 6, 3, generator=g).to(dtype)
        mask = _keep_one(torch.rand(1, 1, 5, 6, generator=g) < 0.5, g)
        args = [q, k, v, mask, 0.3]
    else:
        q = torch.randn(2, 5, 3, 8, generator=g).transpose(1, 2).to(dtype)
        k = torch.randn(2, 4, 3, 8, generator=g).transpose(1, 2).to(dtype)
        v = torch.randn(2, 4, 3, 8, generator=g).transpose(1, 2).to(dtype)
        args = [q, k, v, None, None]
    result = torch.library.opcheck(op, tuple(args))
    assert all(r == "SUCCESS" for r in result.values()), result


@pytest.mark.parametrize("B,Hkv", [(1, 1), (1, 2), (2, 1), (2, 2)])
@pytest.mark.parametrize("mask_kind", ["float_b1qk", "float_k", "bool"])
def test_gradcheck_float64(B, Hkv, mask_kind):
    _need_kernel()
    g = torch.Generator().manual_seed(B * 10 + Hkv)
    H, Sq, Sk, D, Dv = 2, 3, 4, 3, 2
    q = torch.randn(B, H, Sq, D, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(B, Hkv, Sk, D, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(B, Hkv, Sk, Dv, generator=g, dtype=torch.float64, requires_grad=True)
    if mask_kind == "float_b1qk":
        mask = torch.randn(B, 1, Sq, Sk, generator=g, dtype=torch.float64, requires_grad=True)
    elif mask_kind == "float_k":
        mask = torch.randn(Sk, generator=g, dtype=torch.float64, requires_grad=True)
    else:
        mask = _keep_one(torch.rand(B, H, Sq, Sk, generator=g) < 0.5, g)
    assert torch.autograd.gradcheck(lambda *a: op(*a, 0.7), (q, k, v, mask))
    assert torch.autograd.gradcheck(lambda q, k, v: op(q, k, v, mask, None), (q, k, v))


def test_grad_float32_matches_reference_autograd():
    _need_kernel()
    seed = _seed()
    g = torch.Generator().manual_seed(seed)
    B, H, Hkv, Sq, Sk, D, Dv = 2, 6, 2, 17, 23, 16, 8
    q = _tensor(g, B, H, Sq, D, "token_major").contiguous()
    k = _tensor(g, B, Hkv, Sk, D, "contiguous")
    v = _tensor(g, B, Hkv, Sk, Dv, "contiguous")
    mask = torch.randn(B, 1, Sq, Sk, generator=g)
    grad = torch.randn(B, H, Sq, Dv, generator=g)
    ins = [t.clone().requires_grad_() for t in (q, k, v, mask)]
    op(*ins, None).backward(grad)
    ref_ins = [t.double().requires_grad_() for t in (q, k, v, mask)]
    reference.attention(*ref_ins, D ** -0.5).backward(grad.double())
    for name, a, r in zip(("query", "key", "value", "attn_mask"), ins, ref_ins):
        assert a.grad is not None and a.grad.dtype == torch.float32, name
        err = (a.grad.double() - r.grad).abs().max().item()
        assert err < 1e-4, f"seed {seed}: grad of {name} off by {err:.3g}"


def test_torch_compile_fullgraph_matches_eager():
    _need_kernel()
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 7, 4, 16, generator=g).transpose(1, 2)
    k = torch.randn(2, 2, 9, 16, generator=g)
    v = torch.randn(2, 2, 9, 8, generator=g)
    mask = torch.randn(2, 1, 7, 9, generator=g)

    def f(q, k, v, mask):
        return op(q, k, v, mask, None).transpose(1, 2).reshape(2, 7, 32) * 2

    torch._dynamo.reset()
    out = torch.compile(f, fullgraph=True)(q, k, v, mask)
    assert torch.allclose(out, f(q, k, v, mask), atol=1e-6, rtol=0)


@pytest.mark.parametrize("isa", _isas())
def test_threads_agree(isa, cpu_isa_env):
    """Large enough for the kernel to split its work over threads: 1 and 2 threads give the
    same bits (each block of query rows is one thread's)."""
    _need_kernel()
    cpu_isa_env(isa)
    g = torch.Generator().manual_seed(_seed())
    B, H, Hkv, Sq, Sk, D, Dv = 2, 6, 3, 130, 100, 64, 40
    q = _tensor(g, B, H, Sq, D, "feature_major")
    k = _tensor(g, B, Hkv, Sk, D, "token_major")
    v = _tensor(g, B, Hkv, Sk, Dv, "token_major")
    mask = torch.randn(B, 1, Sq, Sk, generator=g)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = op(q, k, v, mask, None)
        torch.set_num_threads(2)
        two = op(q, k, v, mask, None)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)
    _agree(two, _ref64(q, k, v, mask, None), 2e-5, f"isa {isa}")
