"""End to end against the engines users pick for CPU inference: pruned all-MiniLM-L6-v2.

    python bench/e2e_peers.py [--threads 2] [--rounds 5] [--calls 8]
                              [--out DIR (default ./sparsekern-e2e-peers)]
                              [--deepsparse-python /path/to/venv-ds/bin/python] [--no-compile]
                              [--lock /path/to/lockfile] [--compiled-attention {eager,sdpa}]
                              [--freezing] [--no-aoti] [--sparse-attention {fused,hf}]

The same pretrained all-MiniLM-L6-v2 sentence encoder (sentence embedding = mean-pooled,
L2-normalised last hidden state), at 1 sentence x 16 tokens and 32 sentences x 64 tokens:

- dense engines on the unpruned model: torch eager, torch.compile, ONNX Runtime, OpenVINO
  (fp32; a pruned model runs exactly as fast on them: they do not skip zeros);
- per pruned variant (magnitude pruning of all 36 encoder Linear layers: 90% unstructured,
  90% in 32x32 blocks, 2:4): DeepSparse 1.8 on the exported ONNX (it finds the zeros itself;
  it needs Python <= 3.11 and lives in its own venv, driven through bench/peers_worker.py),
  and sparsekern (``sk.sparsify`` to csc / bsr / 2:4) eager and under torch.compile;
- torch's deployment path for both, AOTInductor (``torch.export`` at the shape, then
  ``torch._inductor.aoti_compile_and_package`` / ``aoti_load_package``): no Python-side graph
  or guards per call; the weights are constants of the package (``--no-aoti`` skips it).

The dense torch.compile and AOTInductor engines run a copy of their model whose attention is
Hugging Face's "eager" one (``--compiled-attention``, default eager): matmuls and a softmax
that inductor fuses, 1.1-1.2x faster for the whole compiled model at 32x64 tokens than the
"sdpa" default, which runs torch's CPU flash-attention kernel (~30 ms of a ~100 ms model
there; 2 threads, Zen 5, bench/results/e2e-attention-2026-12-07). The dense eager engine keeps
"sdpa". Every sparsekern engine runs sparsekern's fused CPU attention
(``sparsekern.models.use_fused_attention``, as a user would; ``--sparse-attention hf`` gives
them Hugging Face's instead, as the dense engines).

Every engine's embeddings are checked against torch eager on the same weights (max abs
difference reported). Timing: all engines are built and warmed first; then ``rounds``
rounds, each timing every engine in turn (interleaved) for ``calls`` calls after ``IDLE_S``
seconds of idleness and ``WARM_CALLS`` untimed calls (so no engine is timed beside another's
spinning threads, nor with its own pool asleep); the figure is the median over all calls,
the spread the lowest and highest round median. An engine that
does not install or fails is reported as skipped with its reason, never dropped silently.
Writes OUT/e2e-peers.json (every figure, machine facts) and OUT/e2e-peers.md.
This is a benchmark: it unsets OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE before NumPy loads.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

if __name__ == "__main__" and os.environ.get("_SK_PEERS_CHILD") != "1":
    # An honest NumPy baseline: these guards slow OpenBLAS's sgemm (see the README).
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env["_SK_PEERS_CHILD"] = "1"
    os.execve(sys.executable, [sys.executable] + sys.argv, env)

import copy
import fcntl
import platform
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import sparsekern as sk  # noqa: E402
from sparsekern._cli import int_at_least, output_folder_problem  # noqa: E402
from sparsekern.models.attention import use_fused_attention  # noqa: E402
from sparsekern.models.minilm import load_minilm  # noqa: E402
from sparsekern.prune import prune_model  # noqa: E402

#: variant -> (prune granularity, ratio, sparsekern layout)
VARIANTS = {"90% unstructured": ("fine", 0.9, "csc"),
            "90% 32x32 blocks": ((32, 32), 0.9, "bsr"),
            "2:4": ("2:4", None, "2:4")}
SHAPES = ((1, 16), (32, 64))
#: Untimed calls at the start of every engine's block (see time_engines).
WARM_CALLS = 2
#: Seconds of idleness before every engine's block: an engine's thread pool keeps spinning after
#: its calls, and the next engine's block ran beside it (ONNX Runtime's threads burnt 40-50 ms of
#: CPU in the 50 ms after a 1x16 block, torch's OpenMP team ~10 ms, OpenVINO and DeepSparse
#: none measurable: 2 threads, Zen 5, 2026-12-07; the WARM_CALLS, ~8 ms at 1x16, did not cover
#: it, and OpenVINO, which follows ONNX Runtime, was timed beside its spinning threads).
IDLE_S = 0.2


@dataclass
class PeerConfig:
    """What to run. threads: CPU threads for every engine; rounds x calls timed calls per
    engine and shape (calls is halved for the large shape); lock: a file to flock while
    timing (so other timing jobs on a shared machine wait)."""
    threads: int = 2
    rounds: int = 5
    calls: int = 8
    out: Path = Path("sparsekern-e2e-peers")  # under the current directory, not bench/results
    deepsparse_python: Optional[str] = None
    compile: bool = True
    lock: Optional[str] = None
    compiled_attention: str = "eager"
    #: inductor's freezing for the torch.compile engines (weights folded in as constants: a
    #: weight changed after compiling is not seen; for inference only)
    freezing: bool = False
    #: the AOTInductor engines (dense torch and each sparsekern model, exported per shape)
    aoti: bool = True
    #: sparsekern.keep_freed_memory() before anything is built: glibc's malloc keeps freed
    #: memory for reuse (process-wide: every in-process engine, dense torch included)
    keep_freed_memory: bool = False
    #: attention of every sparsekern engine: "fused" (sparsekern.models.use_fused_attention,
    #: the fused CPU kernel) or "hf" (Hugging Face's, as the dense torch engines run it:
    #: "sdpa" eager, ``compiled_attention`` compiled)
    sparse_attention: str = "fused"


@dataclass
class Engine:
    name: str
    variant: str                 # "dense" or a VARIANTS key
    batch: int
    tokens: int
    call: Optional[Callable[[], np.ndarray]] = None
    skipped: Optional[str] = None
    max_abs_diff: Optional[float] = None
    round_medians_ms: List[float] = field(default_factory=list)
    times_ms: List[float] = field(default_factory=list)


def make_inputs(batch: int, tokens: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The fixed inputs every engine gets (bench/peers_worker.py builds the same)."""
    ids = (torch.arange(batch * tokens, dtype=torch.int64) * 7919 % 29000 + 1000)
    return ids.reshape(batch, tokens), torch.ones(batch, tokens, dtype=torch.int64)


def pruned_copy(dense: torch.nn.Module, variant: str) -> torch.nn.Module:
    gran, ratio, _ = VARIANTS[variant]
    m = copy.deepcopy(dense)
    prune_model(m, ratio, granularity=gran, criterion="l1")
    return m


def compiled(model: torch.nn.Module, attention: str) -> torch.nn.Module:
    """torch.compile of a copy of the SentenceEncoder ``model`` whose encoder's attention runs
    as ``attention`` (a transformers attn_implementation: "eager" or "sdpa")."""
    m = copy.deepcopy(model)
    m.encoder.set_attn_implementation(attention)
    return torch.compile(m)


def aoti_call(model: torch.nn.Module, attention: str, batch: int, tokens: int,
              work: Path) -> Callable[[], np.ndarray]:
    """A copy of ``model`` (attention as in ``compiled``) exported at batch x tokens, compiled
    ahead of time by AOTInductor into a package under ``work`` and loaded back: what an
    inference server runs, with no Python-side graph or guards per call."""
    m = copy.deepcopy(model).eval()
    m.encoder.set_attn_implementation(attention)
    ids, mask = make_inputs(batch, tokens)
    ep = torch.export.export(m, (ids, mask))
    fd, name = tempfile.mkstemp(suffix=".pt2", dir=work)
    os.close(fd)
    runner = torch._inductor.aoti_load_package(
        torch._inductor.aoti_compile_and_package(ep, package_path=name))

    def call():
        with torch.inference_mode():
            return runner(ids, mask).numpy()
    return call


def export_onnx(model: torch.nn.Module, path: Path) -> Path:
    ids, mask = make_inputs(1, 16)
    axes = {"input_ids": {0: "b", 1: "t"}, "attention_mask": {0: "b", 1: "t"},
            "embedding": {0: "b"}}
    torch.onnx.export(model, (ids, mask), str(path), input_names=["input_ids", "attention_mask"],
                      output_names=["embedding"], dynamic_axes=axes, opset_version=17,
                      dynamo=False)
    return path


def torch_call(model, batch, tokens) -> Callable[[], np.ndarray]:
    ids, mask = make_inputs(batch, tokens)

    def call():
        with torch.inference_mode():
            return model(ids, mask).numpy()
    return call


def ort_call(onnx_path, batch, tokens, threads) -> Callable[[], np.ndarray]:
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    s = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    ids, mask = (t.numpy() for t in make_inputs(batch, tokens))
    return lambda: s.run(None, {"input_ids": ids, "attention_mask": mask})[0]


def openvino_call(onnx_path, batch, tokens, threads) -> Callable[[], np.ndarray]:
    import openvino as ov
    core = ov.Core()
    cm = core.compile_model(str(onnx_path), "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                    "PERFORMANCE_HINT": "LATENCY",
                                                    "INFERENCE_PRECISION_HINT": "f32"})
    req = cm.create_infer_request()
    ids, mask = (t.numpy() for t in make_inputs(batch, tokens))
    return lambda: req.infer({"input_ids": ids, "attention_mask": mask})[0].copy()


class DeepSparseWorker:
    """bench/peers_worker.py in DeepSparse's own venv, spoken to over pipes."""

    def __init__(self, python: str):
        worker = Path(__file__).with_name("peers_worker.py")
        self.p = subprocess.Popen([python, str(worker)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)

    def ask(self, **req) -> dict:
        self.p.stdin.write(json.dumps(req) + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"the DeepSparse worker exited (code {self.p.poll()})")
        ans = json.loads(line)
        if not ans.get("ok"):
            raise RuntimeError(ans.get("error", "unknown error"))
        return ans

    def close(self):
        try:
            self.ask(op="quit")
        except Exception:
            pass
        self.p.wait(timeout=30)


def _try(engine: Engine, build: Callable[[], Callable[[], np.ndarray]], want: np.ndarray):
    """Build the engine's call, run it once, check it against ``want``; skip on failure."""
    try:
        engine.call = build()
        got = engine.call()
        engine.max_abs_diff = float(np.abs(np.asarray(got) - want).max())
    except Exception as e:  # an optional peer that fails is reported, not fatal
        engine.call, engine.skipped = None, f"{type(e).__name__}: {str(e)[:200]}"


def build_engines(cfg: PeerConfig, work: Path) -> Tuple[List[Engine], Optional[DeepSparseWorker]]:
    dense, _ = load_minilm()
    models = {"dense": dense}
    models.update({v: pruned_copy(dense, v) for v in VARIANTS})
    onnx = {v: export_onnx(m, work / f"{v.replace(' ', '_').replace(':', '-')}.onnx")
            for v, m in models.items()}
    ds = None
    ds_why = "no --deepsparse-python given (DeepSparse 1.8 needs its own Python <= 3.11 venv)"
    if cfg.deepsparse_python:
        try:
            ds = DeepSparseWorker(cfg.deepsparse_python)
        except OSError as e:
            ds_why = f"cannot start {cfg.deepsparse_python}: {e}"
    engines = []
    for b, t in SHAPES:
        want = {v: torch_call(m, b, t)() for v, m in models.items()}
        engines += _dense_engines(cfg, models["dense"], onnx["dense"], work, b, t, want["dense"])
        for v in VARIANTS:
            engines += _sparse_engines(cfg, models[v], v, onnx[v], work, ds, ds_why, b, t,
                                       want[v])
    return engines, ds


def _skip_reason(cfg: PeerConfig, name: str) -> Optional[str]:
    """Why an engine the options turn off is skipped (None: it runs)."""
    if "compile" in name and not cfg.compile:
        return "--no-compile"
    if "AOTInductor" in name and not cfg.aoti:
        return "--no-aoti"
    return None


def _dense_engines(cfg, model, onnx_path, work, b, t, want) -> List[Engine]:
    out = []
    for name, build in (("torch eager", lambda: torch_call(model, b, t)),
                        ("torch.compile",
                         lambda: torch_call(compiled(model, cfg.compiled_attention), b, t)),
                        ("torch AOTInductor",
                         lambda: aoti_call(model, cfg.compiled_attention, b, t, work)),
                        ("ONNX Runtime", lambda: ort_call(onnx_path, b, t, cfg.threads)),
                        ("OpenVINO", lambda: openvino_call(onnx_path, b, t, cfg.threads))):
        e = Engine(name, "dense", b, t)
        e.skipped = _skip_reason(cfg, name)
        if e.skipped is None:
            _try(e, build, want)
        out.append(e)
    return out


def _sparse_engines(cfg, model, variant, onnx_path, work, ds, ds_why, b, t,
                    want) -> List[Engine]:
    layout = VARIANTS[variant][2]
    sparse = sk.sparsify(copy.deepcopy(model), layout=layout)
    attention = cfg.compiled_attention
    if cfg.sparse_attention == "fused":
        sparse = use_fused_attention(sparse)
        attention = "sparsekern"
    out = []
    e = Engine("DeepSparse 1.8", variant, b, t)
    if ds is None:
        e.skipped = ds_why
    else:
        key = f"{variant}@{b}x{t}"

        def build():
            ds.ask(op="compile", key=key, onnx=str(onnx_path), batch=b, tokens=t,
                   threads=cfg.threads)
            return lambda: np.asarray(ds.ask(op="run", key=key)["out"], dtype=np.float32)
        _try(e, build, want)
        if e.call is not None:
            e.call = ("deepsparse", ds, key)  # timed inside the worker (no pipe cost)
    out.append(e)
    for name, build in ((f"sparsekern {layout} eager", lambda: torch_call(sparse, b, t)),
                        (f"sparsekern {layout} + torch.compile",
                         lambda: torch_call(compiled(sparse, attention), b, t)),
                        (f"sparsekern {layout} + AOTInductor",
                         lambda: aoti_call(sparse, attention, b, t, work))):
        e = Engine(name, variant, b, t)
        e.skipped = _skip_reason(cfg, name)
        if e.skipped is None:
            _try(e, build, want)
        out.append(e)
    return out


def time_engines(engines: List[Engine], cfg: PeerConfig,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.perf_counter) -> None:
    """Interleaved rounds: every engine of a shape in turn, ``calls`` calls each (timed with
    ``clock``), each block after IDLE_S seconds of idleness (``sleep``) and WARM_CALLS untimed
    calls."""
    live = [e for e in engines if e.call is not None]
    for _ in range(cfg.rounds):
        for e in live:
            calls = cfg.calls if e.batch == 1 else max(2, cfg.calls // 2)
            sleep(IDLE_S)  # the last engine's threads go idle first
            if isinstance(e.call, tuple):
                _, ds, key = e.call
                ts = ds.ask(op="time", key=key, calls=calls, warm=WARM_CALLS)["times_s"]
            else:
                # Untimed first: the engines run on different thread pools (torch's OpenMP
                # team, ONNX Runtime's, OpenVINO's), whose threads spin for a while after a
                # call; a block's first calls otherwise ran beside the last engine's threads.
                for _ in range(WARM_CALLS):
                    e.call()
                ts = []
                for _ in range(calls):
                    t0 = clock()
                    e.call()
                    ts.append(clock() - t0)
            ms = [x * 1e3 for x in ts]
            e.times_ms += ms
            e.round_medians_ms.append(statistics.median(ms))


def machine() -> dict:
    import threadpoolctl
    pools = [{k: p.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
             for p in threadpoolctl.threadpool_info()]
    from sparsekern.timing.machine import cpu_facts, extension_isa
    return {"cpu": cpu_facts().get("model") or platform.machine(),
            "python": platform.python_version(),
            "torch": torch.__version__, "cpu_isa": extension_isa(),
            "load_average": os.getloadavg(), "blas": pools,
            "cpus": len(os.sched_getaffinity(0))}


def summarize(engines: List[Engine]) -> List[dict]:
    rows = []
    for e in engines:
        r = {"engine": e.name, "model": e.variant, "shape": f"{e.batch}x{e.tokens}",
             "skipped": e.skipped, "max_abs_diff": e.max_abs_diff}
        if e.times_ms:
            r.update(median_ms=statistics.median(e.times_ms),
                     spread_ms=[min(e.round_medians_ms), max(e.round_medians_ms)],
                     calls=len(e.times_ms))
        rows.append(r)
    return rows


def render(rows: List[dict], facts: dict, cfg: PeerConfig) -> str:
    sparse_attention = ("sparsekern's fused attention" if cfg.sparse_attention == "fused" else
                        f"Hugging Face's ({cfg.compiled_attention!r} compiled) attention")
    lines = [f"# End to end, pruned all-MiniLM-L6-v2, {cfg.threads} threads, fp32",
             "", f"`python bench/e2e_peers.py` — {facts['cpu']}, {facts['cpus']} CPUs, "
             f"torch {facts['torch']}, load average after building the engines (which loads "
             f"the machine itself) {facts['load_average']}; median over every timed call of "
             f"{cfg.rounds} interleaved rounds, each engine's block after "
             f"{IDLE_S:g} s idle and {WARM_CALLS} untimed calls (spread: lowest-highest round "
             f"median); "
             f"dense torch.compile and AOTInductor engines with {cfg.compiled_attention!r} "
             f"attention, sparsekern engines with {sparse_attention}"
             f"{' and inductor freezing' if cfg.freezing else ''}"
             f"{'; sparsekern.keep_freed_memory() first' if cfg.keep_freed_memory else ''}.",
             "", "| shape | model | engine | median ms | spread ms | max abs diff vs torch |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("median_ms") is None:
            lines.append(f"| {r['shape']} | {r['model']} | {r['engine']} | skipped: "
                         f"{r['skipped']} | | |")
            continue
        lo, hi = r["spread_ms"]
        lines.append(f"| {r['shape']} | {r['model']} | {r['engine']} | {r['median_ms']:.2f} | "
                     f"{lo:.2f}-{hi:.2f} | {r['max_abs_diff']:.1e} |")
    return "\n".join(lines) + "\n"


def _locked(path: Optional[str]):
    if not path:
        return None
    f = open(path, "a")
    fcntl.flock(f, fcntl.LOCK_EX)
    return f


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog=f"Timing: {PeerConfig.rounds} rounds by default; in each, every engine in turn "
               f"runs a block of --calls timed calls (half as many, at least 2, at 32x64 tokens), "
               f"each block after {IDLE_S:g} s of idleness and {WARM_CALLS} untimed calls. The "
               f"figure is the median over every timed call. Writes OUT/e2e-peers.json and "
               f"OUT/e2e-peers.md.")
    ap.add_argument("--threads", type=int_at_least(1), default=PeerConfig.threads,
                    help="CPU threads of every engine")
    ap.add_argument("--rounds", type=int_at_least(1), default=PeerConfig.rounds,
                    help="interleaved rounds")
    ap.add_argument("--calls", type=int_at_least(1), default=PeerConfig.calls,
                    help="timed calls per engine and round at 1x16 tokens")
    ap.add_argument("--out", type=Path, default=PeerConfig.out,
                    help="folder for the report (created at the end; checked before anything "
                         "runs)")
    ap.add_argument("--deepsparse-python", default=os.environ.get("SPARSEKERN_DEEPSPARSE_PYTHON"),
                    help="python of a venv with DeepSparse 1.8 (else $SPARSEKERN_DEEPSPARSE_PYTHON;"
                         " none: DeepSparse is reported as skipped)")
    ap.add_argument("--no-compile", action="store_true",
                    help="skip the torch.compile engines")
    ap.add_argument("--lock", default=None,
                    help="a file to flock while timing (other timing jobs wait)")
    ap.add_argument("--compiled-attention", choices=("eager", "sdpa"),
                    default=PeerConfig.compiled_attention,
                    help="Hugging Face attention of the torch.compile engines")
    ap.add_argument("--freezing", action="store_true",
                    help="compile with inductor's freezing (torch._inductor.config.freezing: "
                         "weights become constants; inference only)")
    ap.add_argument("--no-aoti", action="store_true",
                    help="skip the AOTInductor engines (torch.export + "
                         "torch._inductor.aoti_compile_and_package, per shape)")
    ap.add_argument("--sparse-attention", choices=("fused", "hf"),
                    default=PeerConfig.sparse_attention,
                    help="attention of the sparsekern engines: fused (sparsekern's CPU kernel, "
                         "sparsekern.models.use_fused_attention) or hf (Hugging Face's, as the "
                         "dense torch engines)")
    ap.add_argument("--keep-freed-memory", action="store_true",
                    help="call sparsekern.keep_freed_memory() first (glibc's malloc keeps freed "
                         "memory for reuse; applies to every engine in this process)")
    a = ap.parse_args(argv)
    problem = output_folder_problem(str(a.out))  # before anything is built or timed
    if problem:
        ap.error(f"argument --out: {problem}")
    cfg = PeerConfig(a.threads, a.rounds, a.calls, a.out, a.deepsparse_python,
                     not a.no_compile, a.lock, a.compiled_attention, a.freezing, not a.no_aoti,
                     a.keep_freed_memory, a.sparse_attention)
    if cfg.keep_freed_memory and not sk.keep_freed_memory():
        ap.error("argument --keep-freed-memory: the C library is not glibc")
    if cfg.freezing:
        import torch._inductor.config as inductor_config
        inductor_config.freezing = True
    torch.set_num_threads(cfg.threads)
    # Every torch.compile'd model here shares one forward (4 models x 2 shapes = 8 graphs):
    # dynamo's default limit of 8 per code object would silently run any further one eager.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    from sparsekern.timing.machine import extension_isa
    extension_isa()  # a bad SPARSEKERN_CPU_ISA: its ValueError now, not after building engines
    with tempfile.TemporaryDirectory() as tmp:
        engines, ds = build_engines(cfg, Path(tmp))
        lock = _locked(cfg.lock)
        facts = machine()
        time_engines(engines, cfg)
        if lock:
            lock.close()
        if ds:
            ds.close()
    rows = summarize(engines)
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "e2e-peers.json").write_text(json.dumps(
        {"config": {k: str(v) for k, v in asdict(cfg).items()}, "machine": facts, "rows": rows},
        indent=1))
    md = render(rows, facts, cfg)
    (cfg.out / "e2e-peers.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
