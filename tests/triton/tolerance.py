"""Error tolerances of the Triton kernels' results, derived rather than guessed.

float32 ``tl.dot`` runs on tensor cores in TF32 on a GPU: each float32 operand keeps 10 of
its 23 explicit mantissa bits (Hopper's wgmma drops the low 13 bits: truncation), products
and sums are float32. For a result C = A @ B compared with the float64 product:

* Operand rounding. Truncating a mantissa m in [1, 2) to 10 bits changes the operand by a
  relative delta in (-2^-10, 0], with mean >= -2^-11 and variance <= 2^-20 / 12 when the
  dropped bits are uniform. A product of two such operands is off by delta_a + delta_b:
  mean magnitude <= 2^-10, standard deviation <= 2^-10 / sqrt(6). The mean part scales the
  whole product (a normwise relative error <= 2^-10); the random part adds, over the K
  independent products of an output, like the products themselves do (relative <= 2^-10 /
  sqrt(6) for independent random inputs). Together: sqrt(1 + 1/6) * 2^-10 ~ 1.05e-3
  (round-to-nearest conversion gives about half of that).
* float32 accumulation of K terms: at most K * 2^-24 relative to sum |a||b| (worst case,
  Higham's gamma_K), ~2.4e-4 at K = 4096.

The tolerance is MARGIN times the first term plus the second: far below the O(1) error of
a wrong index or a lost tile, and above what a correct kernel produces (7.7e-4 was read on
an H100 for a check that had 1e-3, too close to the 1.05e-3 this model predicts).
"""
import math

import torch

#: Explicit mantissa bits TF32 keeps, and those of float32 (for the accumulation term).
TF32_MANTISSA_BITS = 10
FP32_MANTISSA_BITS = 23
#: Factor over the modelled TF32 rounding error (the model is a mean/rms estimate).
MARGIN = 2.0
#: 16-bit operands: float32 accumulation, output rounded to 8 (bf16) / 11 (fp16) bits.
HALF_TOL = {torch.float16: 1e-2, torch.bfloat16: 1e-2}


def tf32_tolerance(K: int, margin: float = MARGIN) -> float:
    """Relative (Frobenius) error allowed for a float32 product over K terms run in TF32."""
    u_in = 2.0 ** -TF32_MANTISSA_BITS
    rounding = u_in * math.sqrt(1.0 + 1.0 / 6.0)
    accumulation = K * 2.0 ** -(FP32_MANTISSA_BITS + 1)
    return margin * rounding + accumulation


def fp32_tolerance(K: int) -> float:
    """Exact float32 dots (the interpreter): K * 2^-24 worst case, with a floor of 1e-5."""
    return max(1e-5, K * 2.0 ** -(FP32_MANTISSA_BITS + 1))


def tolerance(dtype: torch.dtype, K: int, tf32: bool) -> float:
    """Tolerance for a Triton result of ``dtype`` over K terms (``tf32``: float32 on a GPU)."""
    if dtype == torch.float32:
        return tf32_tolerance(K) if tf32 else fp32_tolerance(K)
    return HALF_TOL[dtype]
