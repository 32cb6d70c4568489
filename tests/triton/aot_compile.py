"""Compile the Triton kernels for a GPU target without a GPU (ahead of time).

Triton ships ptxas, so the whole pipeline (TTIR -> TTGIR -> LLVM -> PTX -> cubin) runs on a
CPU-only machine. This catches what the interpreter cannot: code that does not lower
(layouts of reshape/join, dot shapes, loop-carried types) and, with ``--report``, the
register use and spills of each configuration and whether Hopper's ``wgmma`` and
pipelined async copies are used.

Run in a process where TRITON_INTERPRET is unset or 0 (the kernels must be real
JITFunctions):  ``TRITON_INTERPRET=0 python tests/triton/aot_compile.py [--all] [--report]``
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

_TYPES = {"fp16": "*fp16", "fp32": "*fp32", "bf16": "*bf16"}


#: Unit strides Triton's launcher turns into constexpr 1: B and out row-major, or (as
#: ``linear`` calls the op, B = x.T) both column-major.
UNIT_STRIDES = {"row": {"stride_bn": 1, "stride_on": 1}, "col": {"stride_bk": 1, "stride_om": 1}}


def _signature(kernel, ptr_types, constexprs):
    """Signature and alignment hints as Triton's launcher would specialize them."""
    sig, attrs = {}, {}
    for i, name in enumerate(kernel.arg_names):
        if name in constexprs:
            sig[name] = "constexpr"
        elif name in ptr_types:
            sig[name] = ptr_types[name]
            attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            sig[name] = "i32"
            if name.startswith(("M", "N", "K")) or name in ("stride_vm", "stride_mm", "n_vals",
                                                              "n_meta"):
                attrs[(i,)] = [["tt.divisibility", 16]]
    return sig, attrs


def compile_kernel(kernel, ptr_types, constexprs, num_warps, num_stages, target=("cuda", 90, 32),
                   major="row"):
    """Compile ``kernel`` (a JITFunction) for ``target``; returns Triton's compiled kernel."""
    constexprs = {**{k: v for k, v in UNIT_STRIDES[major].items() if k in kernel.arg_names},
                  **constexprs}
    sig, attrs = _signature(kernel, ptr_types, constexprs)
    src = ASTSource(fn=kernel, signature=sig, constexprs=constexprs, attrs=attrs)
    return triton.compile(src, target=GPUTarget(*target),
                          options={"num_warps": num_warps, "num_stages": num_stages})


def resource_usage(compiled) -> str:
    """'REG:.. LOCAL:..' from cuobjdump of the cubin ('' when cuobjdump is missing)."""
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.exists(tool):
        tool = shutil.which("cuobjdump")
    if not tool:
        return ""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        res = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True)
    for line in res.stdout.splitlines():
        if "REG:" in line:
            return " ".join(p for p in line.split() if p.split(":")[0] in ("REG", "LOCAL", "STACK"))
    return ""


#: A few labels that cover every kernel and code path (used by the test: compiles are slow).
SMOKE = ("bsr 64x64 decode split=4", "bsr 64x64 large split=1", "bsr 8x1 small",
         "bsr 24x40 decode split=1", "2:4 decode split=4", "2:4 large", "csc decode split=4",
         "csc large", "splitk reduce", "idx64 ")


def cases(all_configs: bool, dtype: str = "fp16"):
    """(label, kernel, ptr_types, constexprs, warps, stages) for each kernel and regime."""
    os.environ.pop("TRITON_INTERPRET", None)
    from sparsekern.triton import bsr, csc, semi24, splitk
    from sparsekern.triton.configs import kernel_configs
    from sparsekern.triton.csc_strips import STRIP_ROWS

    p = _TYPES[dtype]
    common = dict(b_ptr=p, bias_ptr=p, out_ptr=p, ws_ptr="*fp32")
    flags = dict(HAS_BIAS=True, IDX64=False)
    specs = []
    for bm, bk in ((64, 64), (32, 32), (16, 16), (128, 128), (8, 1), (24, 40)):
        for reg in ("decode", "small", "large"):
            for sk in (1, 4) if reg == "decode" else (1,):
                specs.append((f"bsr {bm}x{bk}", bsr.bsr_spmm_kernel, "bsr", reg,
                              dict(values_ptr=p, indices_ptr="*i32", offsets_ptr="*i32", **common),
                              dict(bm=bm, bk=bk, SPLIT_K=sk, **flags), (bm, bk)))
    for reg in ("decode", "small", "large"):
        for sk in (1, 4) if reg == "decode" else (1,):
            specs.append(("2:4", semi24.semi24_spmm_kernel, "semi24", reg,
                          dict(values_ptr=p, meta_ptr="*u8", **common),
                          dict(SPLIT_K=sk, **flags), (None, None)))
            specs.append(("csc", csc.csc_spmm_kernel, "csc", reg,
                          dict(values_ptr=p, cols_ptr="*i16", rows_ptr="*u8", strip_ptr="*i32",
                               **common),
                          dict(SPLIT_K=sk, TM=STRIP_ROWS, ALIGN=16, **flags), (None, None)))
    for label, kernel, name, reg, ptrs, consts, (bm, bk) in specs:
        configs = kernel_configs(name, reg, bm, bk)
        for cfg in configs if all_configs else configs[:1]:
            yield (f"{label} {reg} split={consts['SPLIT_K']} {cfg.kwargs}", kernel, ptrs,
                   {**consts, **cfg.kwargs}, cfg.num_warps, cfg.num_stages)
    yield ("splitk reduce", splitk.splitk_reduce_kernel,
           dict(ws_ptr="*fp32", bias_ptr=p, out_ptr=p),
           dict(SPLIT_K=4, HAS_BIAS=True, IDX64=False, BM=256, BN=16), 4, 1)
    # 64-bit offsets (IDX64): one configuration per kernel path, split and unsplit, and
    # K = 1 (Triton's launcher makes it a constexpr, which the int64 casts must accept).
    idx64 = [("bsr 64x64 decode split=4", "bsr", (64, 64), "decode", 4),
             ("bsr 8x1 small split=1", "bsr", (8, 1), "small", 1),
             ("2:4 decode split=1", "semi24", (None, None), "decode", 1),
             ("2:4 decode split=4", "semi24", (None, None), "decode", 4),
             ("csc decode split=4", "csc", (None, None), "decode", 4)]
    kernels = {"bsr": (bsr.bsr_spmm_kernel, dict(values_ptr=p, indices_ptr="*i32",
                                                  offsets_ptr="*i32", **common)),
               "semi24": (semi24.semi24_spmm_kernel, dict(values_ptr=p, meta_ptr="*u8",
                                                          **common)),
               "csc": (csc.csc_spmm_kernel, dict(values_ptr=p, cols_ptr="*i16", rows_ptr="*u8",
                                                 strip_ptr="*i32", **common))}
    for label, name, (bm, bk), reg, sk in idx64:
        kernel, ptrs = kernels[name]
        consts = dict(SPLIT_K=sk, HAS_BIAS=True, IDX64=True)
        consts.update(dict(bm=bm, bk=bk) if name == "bsr" else
                      dict(TM=STRIP_ROWS, ALIGN=16) if name == "csc" else {})
        cfg = kernel_configs(name, reg, bm, bk)[0]
        for k_one in (False, True) if name == "semi24" else (False,):
            extra = dict(K=1) if k_one else {}
            yield (f"idx64 {label}{' K=1' if k_one else ''} {cfg.kwargs}", kernel, ptrs,
                   {**consts, **extra, **cfg.kwargs}, cfg.num_warps, cfg.num_stages)
    yield ("idx64 splitk reduce", splitk.splitk_reduce_kernel,
           dict(ws_ptr="*fp32", bias_ptr=p, out_ptr=p),
           dict(SPLIT_K=4, HAS_BIAS=True, IDX64=True, BM=256, BN=16), 4, 1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--all", action="store_true", help="every autotune configuration")
    ap.add_argument("--report", action="store_true", help="registers, spills, wgmma, pipelining")
    ap.add_argument("--dtype", default="fp16", choices=sorted(_TYPES))
    ap.add_argument("--arch", type=int, default=90)
    ap.add_argument("--major", default="row", choices=sorted(UNIT_STRIDES),
                    help="B and out row-major (unit N stride) or column-major (as linear)")
    ap.add_argument("--only", default="", help="compile only labels containing this text")
    ap.add_argument("--smoke", action="store_true", help="only the SMOKE labels")
    args = ap.parse_args(argv)
    failures = 0
    for label, kernel, ptrs, consts, warps, stages in cases(args.all, args.dtype):
        if args.only not in label or (args.smoke and not label.startswith(SMOKE)):
            continue
        try:
            cc = compile_kernel(kernel, ptrs, consts, warps, stages, ("cuda", args.arch, 32),
                                args.major)
        except Exception as exc:  # report every failing configuration, then fail
            failures += 1
            print(f"FAIL {label}: {type(exc).__name__}: {str(exc)[:2000]}")
            continue
        line = f"ok   {label} warps={warps} stages={stages}"
        if args.report:
            ttgir = cc.asm["ttgir"]
            line += (f" | {resource_usage(cc)} wgmma={'warp_group_dot' in ttgir}"
                     f" async_copy={ttgir.count('async_copy_global_to_local')}")
        print(line, flush=True)
    print(f"{failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
