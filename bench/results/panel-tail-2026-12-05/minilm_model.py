import copy, json, sys, time, statistics, torch, warnings
warnings.simplefilter("ignore")
import sparsekern as sk
from sparsekern import prune
from sparsekern.models.minilm import load_minilm
from sparsekern.demo.minilm_job import text_data
torch.set_num_threads(2)
model, tok = load_minilm()
d = text_data(tok)
import os
T = int(os.environ.get("TOKENS", "0"))
x = d.examples[0] if T == 0 else {k: v[:1, :T].contiguous() for k, v in d.examples[1].items()}
out = {"tokens": int(x["input_ids"].shape[1])}
def med_ms(m, n=60):
    with torch.inference_mode():
        for _ in range(10): m(**x)
        ts = []
        for _ in range(7):
            t0 = time.perf_counter()
            for _ in range(n): m(**x)
            ts.append((time.perf_counter() - t0) / n * 1e3)
    return statistics.median(ts)
out["dense"] = med_ms(model)
for gran in ("2:4", "1:4"):
    m = copy.deepcopy(model); prune.prune_model(m, None, gran)
    s = sk.sparsify(copy.deepcopy(m), layout=gran)
    with torch.inference_mode():
        err = (s(**x) - m(**x)).abs().max().item()
    out[gran] = med_ms(s); out[gran + " err"] = err
print(json.dumps(out))
