"""The attention core of one MiniLM layer, four ways, interleaved in one process.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=. python \
        bench/results/attention-2026-12-08/attn_bench.py [--rounds 7] [--threads 2]

softmax(q k^T / sqrt(32) + mask) v for 12 heads of 32 dims, at 32 sequences x 64 tokens and
1 x 16, from q/k/v laid out as a model hands them over: "token-major" ([B, S, H, D] memory,
as nn.Linear's output viewed per head) and "feature-major" (the [H*D, B*S] memory a sparsekern
SparseLinear returns, viewed per head). Each way returns [B, S, H*D] contiguous, what the
output projection reads:
- torch eager: Hugging Face's eager formula (matmul, softmax, matmul, transpose + copy)
- torch.compile of that formula (inductor fuses the scale, mask add and softmax)
- sdpa: torch.nn.functional.scaled_dot_product_attention (torch's CPU flash attention)
- sparsekern: torch.ops.sparsekern.attention (csrc/cpu/attention.cpp)
Rounds interleave the four; each round's figure is the median of its calls; printed: the
median over rounds and the lowest-highest round median. FLOP count: 4 * B * H * S^2 * D.
"""
import argparse
import statistics
import time

import torch

import sparsekern  # noqa: F401  (registers torch.ops.sparsekern.attention)

H, D = 12, 32


def layouts(B, S):
    def token_major():
        return torch.randn(B, S, H, D).transpose(1, 2)

    def feature_major():
        return torch.randn(H * D, B * S).t().reshape(B, S, H, D).transpose(1, 2)
    return {"token-major": token_major, "feature-major": feature_major}


def eager(q, k, v, mask):
    s = torch.matmul(q, k.transpose(2, 3)) * D ** -0.5 + mask
    o = torch.matmul(torch.softmax(s, -1), v)
    return o.transpose(1, 2).contiguous().flatten(2)


def sdpa(q, k, v, mask):
    o = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return o.transpose(1, 2).contiguous().flatten(2)


def fused(q, k, v, mask):
    return torch.ops.sparsekern.attention(q, k, v, mask, None).transpose(1, 2).flatten(2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    ways = {"torch eager": eager, "torch.compile": torch.compile(eager), "sdpa": sdpa,
            "sparsekern": fused}
    print(f"threads {a.threads}, rounds {a.rounds}; ms per call: median (lowest-highest round)")
    for B, S, calls in ((32, 64, 20), (1, 16, 200)):
        for lname, make in layouts(B, S).items():
            torch.manual_seed(0)
            q, k, v = make(), make(), make()
            mask = torch.zeros(B, 1, 1, S)
            mask[0, ..., S // 2:] = torch.finfo(torch.float32).min  # one padded sequence
            with torch.inference_mode():
                ref = eager(q.double(), k.double(), v.double(), mask.double())
                res = {n: [] for n in ways}
                for n, f in ways.items():
                    err = (f(q, k, v, mask).double() - ref).abs().max().item()
                    assert err < 1e-4, (n, err)
                    for _ in range(3):
                        f(q, k, v, mask)
                for _ in range(a.rounds):
                    for n, f in ways.items():
                        ts = []
                        for _ in range(calls):
                            t0 = time.perf_counter()
                            f(q, k, v, mask)
                            ts.append(time.perf_counter() - t0)
                        res[n].append(statistics.median(ts) * 1e3)
            flops = 4 * B * H * S * S * D
            for n, r in res.items():
                med = statistics.median(r)
                print(f"{B}x{S} {lname:13s} {n:13s} {med:8.3f} ({min(r):.3f}-{max(r):.3f})"
                      f"  {flops / med / 1e6:6.1f} GFLOP/s")


if __name__ == "__main__":
    main()
