"""Timing primitives shared by sparsekern.auto (latency tables) and sparsekern.bench (the
harness): nothing here imports either of them.

    timers   interleaved CPU timer, steady-state blocks, cache flusher, CUDA-event timer
    paired   candidates timed in alternation with a reference, with a stability verdict
    load     is the machine busy? (load average, runnable threads, steal, own spread) and
             a recommended thread count
    machine  usable CPUs, last-level cache, ISA flags, the extension's ISA path
"""
from .load import LoadReport, detect_load, quantized_to_slices, recommend_threads, spread
from .machine import extension_isa, last_level_cache_bytes, usable_cpus
from .paired import PairedSettings, time_paired
from .timers import (FULL_TIMER, QUICK_TIMER, BlockSettings, CacheFlusher, CudaTimerSettings,
                     TimerSettings, round_robin, summarize, time_blocks, time_cuda,
                     time_interleaved)

__all__ = ["LoadReport", "detect_load", "quantized_to_slices", "recommend_threads", "spread",
           "extension_isa", "last_level_cache_bytes", "usable_cpus", "PairedSettings",
           "time_paired", "FULL_TIMER", "QUICK_TIMER", "BlockSettings", "CacheFlusher",
           "CudaTimerSettings", "TimerSettings", "round_robin", "summarize", "time_blocks",
           "time_cuda", "time_interleaved"]
