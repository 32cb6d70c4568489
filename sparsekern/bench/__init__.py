"""sparsekern's benchmark harness: one library for the pytest suites (bench/) and the
report command ``python -m sparsekern.bench``.

Modules, each one concern:
    cases       the matrix: real-model shapes x N x sparsity x layout (quick/full/suite)
    magnitude   a tiny magnitude pruner (2:4, blocks, unstructured) for weights and models
    operands    the pruned weight and activations of a case, seeded by the case
    candidates  sparsekern op, dense baselines (torch, NumPy BLAS, cuBLAS) and sparse peers
    timing      re-export of the shared timers (sparsekern.timing: interleaved CPU timer,
                CUDA-event timer, paired timing, load detection)
    bounds      bytes/flops of a case and the bytes-based speedup bound
    metrics     speedup arithmetic, best dense, geometric mean, Amdahl
    machine     machine facts, thread setting, calibration (machine balance)
    runner      run cases -> JSON-ready records
    models, e2e end-to-end model latency, dense vs sparsified, time outside sparse layers
    report      JSON schema and checks, Markdown tables, README section
    plots       speedup-vs-sparsity PNGs
    selftime    the GPU kernels' own timing tables (guarded imports)
    smoke       a tiny all-layout run (for compute-sanitizer)
    contention  quiet vs loaded (own pinned busy processes): ``--contention``
    training    forward+backward of SparseLinear vs nn.Linear (``--backward``, full runs)
    health      warnings: busy machine, scheduler-slice timings, wide spreads, impossible speedups
"""
from .cases import SHAPES, Case, Shape, matrix, select_layouts
from .runner import RunSettings, run_case, run_cases

__all__ = ["SHAPES", "Case", "Shape", "matrix", "select_layouts", "RunSettings", "run_case",
           "run_cases"]
