import copy, sys, time, torch, resource, statistics
sys.path.insert(0, "/work/main"); sys.path.insert(0, "/work/main/bench")
import sparsekern as sk
if sys.argv[1] == "on": assert sk.keep_freed_memory()
from sparsekern.models.minilm import load_minilm
from sparsekern.prune import prune_model
from e2e_peers import make_inputs
torch.set_num_threads(2)
dense, _ = load_minilm()
m = copy.deepcopy(dense); prune_model(m, 0.9, granularity="fine", criterion="l1")
sp = sk.sparsify(m, layout="csc").eval()
ids, mask = make_inputs(32, 64)
with torch.inference_mode():
    ref = dense(ids, mask)
    for _ in range(2): y = sp(ids, mask)
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt; ts = []
    for _ in range(7):
        t = time.perf_counter(); y2 = sp(ids, mask); ts.append(time.perf_counter() - t)
    r1 = resource.getrusage(resource.RUSAGE_SELF); f = (r1.ru_minflt - r0) / 7; print("sys ms/fwd %.1f user ms/fwd %.1f" % (r1.ru_stime*1e3/9, r1.ru_utime*1e3/9), "min %.1f max %.1f" % (min(ts)*1e3, max(ts)*1e3))
print(sys.argv[1], "median ms %.1f" % (statistics.median(ts) * 1e3), "faults/forward %.0f" % f,
      "same output as before:", torch.equal(y, y2), "cos to dense %.4f" % torch.nn.functional.cosine_similarity(ref, y2).mean())
