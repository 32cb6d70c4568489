"""Compiled MiniLM (dense, 90% csc, 90% bsr 32x32), HF attention 'sdpa' (default) vs 'eager'
(matmul + softmax, which inductor compiles), in one process, alternating, 2 threads."""
import copy, os, time, statistics as st, torch
import sparsekern as sk
from sparsekern.models.minilm import load_minilm
from sparsekern.prune import prune_model
torch.set_num_threads(2)
torch._dynamo.config.recompile_limit = 64
torch._dynamo.config.accumulated_recompile_limit = 1024
dense, _ = load_minilm()
models = {"dense": dense}
for lay, gran in (("csc", "fine"), ("bsr", (32, 32))):
    m = copy.deepcopy(dense); prune_model(m, 0.9, granularity=gran, criterion="l1")
    models[lay] = (m, sk.sparsify(copy.deepcopy(m), layout=lay))
for (B, T) in ((1, 16), (32, 64)):
    ids = (torch.arange(B * T) * 7919 % 29000 + 1000).reshape(B, T); mask = torch.ones(B, T, dtype=torch.int64)
    fs = {}
    for name, mm in models.items():
        ref_model, run_model = (mm, mm) if name == "dense" else mm
        for impl in ("sdpa", "eager"):
            r = copy.deepcopy(run_model); r.encoder.set_attn_implementation(impl)
            fs[(name, impl)] = (torch.compile(r), ref_model)
    res = {k: [] for k in fs}
    calls = 20 if B == 1 else 5
    with torch.inference_mode():
        for k, (f, ref) in fs.items():
            e = (f(ids, mask) - ref(ids, mask)).abs().max().item(); assert e < 1e-4, (k, e)
        for r in range(7):
            for k, (f, _) in fs.items():
                f(ids, mask); ts = []
                for _ in range(calls):
                    a = time.perf_counter(); f(ids, mask); ts.append(time.perf_counter() - a)
                res[k].append(st.median(ts) * 1e3)
    for name in models:
        a, b = res[(name, "sdpa")], res[(name, "eager")]
        q = sorted(x / y for x, y in zip(a, b))
        print(f"{B}x{T} {name} + compile: sdpa {st.median(a):.2f} ms, eager attention {st.median(b):.2f} ms: "
              f"x{st.median(a)/st.median(b):.2f} [{q[1]:.2f}-{q[-2]:.2f}]", flush=True)
