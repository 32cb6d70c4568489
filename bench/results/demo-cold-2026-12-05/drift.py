import copy, time, statistics, torch
from sparsekern.models.minilm import load_minilm, tokenize
from sparsekern.auto import build_table, paired_prediction
from sparsekern.auto.measure import MeasureSettings, time_jobs
from sparsekern.auto.signature import call
from sparsekern.demo.minilm_job import JOB_GRID, JOB_TIMER
torch.set_num_threads(2)
model, tok = load_minilm(); model.eval()
x = tokenize(tok, ["The quick brown fox jumps over the lazy dog near the river bank today."])[0]
t0 = time.time()
t = build_table(model, [x], settings=MeasureSettings(grid=JOB_GRID), cache=False)
lab = t.shapes[0]
print(f"table {time.time()-t0:.1f}s context {t.meta['context']} share(dense) {t.cold_share():.2f} model_s {t.model_s[lab]*1e3:.3f} other {t.other_s[lab]*1e3:.3f} predict(dense) {t.predict()[lab]*1e3:.3f}")
def iso():
    r = time_jobs({"dense": (lambda y: call(model, y), x)}, torch.device("cpu"), JOB_TIMER, "warm")
    return r["dense"]["median_s"] * 1e3
print("isolated dense", round(iso(), 3))
sparse = copy.deepcopy(model)
out = paired_prediction(t, model, sparse, {}, [x], windows=3, timer=JOB_TIMER)[lab]
print(f"windows: dense {out['dense_s']*1e3:.3f} sparse {out['sparse_s']*1e3:.3f} predicted {out['predicted_s']*1e3:.3f} other {out['other_s']*1e3:.3f} drift {out['drift']:+.2f}")
print("per window dense", [round(w['dense']*1e3, 3) for w in out['windows']], "other", [round(w['other']*1e3, 3) for w in out['windows']])
print("isolated dense after", round(iso(), 3))
