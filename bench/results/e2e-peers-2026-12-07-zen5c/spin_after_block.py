"""After an engine's block of calls (MiniLM dense, 1x16 tokens, 2 threads): how much CPU do its
threads (or its worker process's) burn while the caller sleeps? /proc/<pid>/stat utime+stime,
sampled over 1 s of idleness (10 ms resolution). Run from the repository root:
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=. python \
        bench/results/e2e-peers-2026-12-07-zen5c/spin_after_block.py"""
import os, sys, time, json, tempfile
sys.path.insert(0, "bench")
os.environ.setdefault("_SK_PEERS_CHILD", "1")
import e2e_peers as ep
import torch
from pathlib import Path

def cpu_s(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

def after(label, call, pid, n=8):
    for _ in range(n): call()
    c0 = cpu_s(pid); t0 = time.time(); out = []
    for dt in (0.01, 0.05, 0.1, 0.2, 0.5, 1.0):
        while time.time() - t0 < dt: time.sleep(0.002)
        out.append(f"{dt*1e3:.0f}ms:{(cpu_s(pid)-c0)*1e3:.0f}")
    print(f"{label}: CPU ms burnt after the block (cumulative) " + " ".join(out), flush=True)

torch.set_num_threads(2)
dense, _ = ep.load_minilm()
work = Path(tempfile.mkdtemp())
onnx = ep.export_onnx(dense, work / "dense.onnx")
me = os.getpid()
after("torch eager (this process)", ep.torch_call(dense, 1, 16), me)
after("ONNX Runtime (this process)", ep.ort_call(onnx, 1, 16, 2), me)
after("OpenVINO (this process)", ep.openvino_call(onnx, 1, 16, 2), me)
ds = ep.DeepSparseWorker(os.environ.get("SPARSEKERN_DEEPSPARSE_PYTHON", "/work/ds-venv/bin/python"))
ds.ask(op="compile", key="d", onnx=str(onnx), batch=1, tokens=16, threads=2)
after("DeepSparse (worker process)", lambda: ds.ask(op="time", key="d", calls=1, warm=0), ds.p.pid)
ds.close()
