"""The harness's timers: moved to the shared :mod:`sparsekern.timing` (auto and bench
both time layers; neither imports the other for it). Re-exported here unchanged."""
from ..timing.timers import (FULL_TIMER, QUICK_TIMER, BlockSettings,  # noqa: F401
                             CacheFlusher, CudaTimerSettings, TimerSettings, plan, quantile,
                             rotation_count, summarize, time_blocks, time_cuda,
                             time_interleaved)
