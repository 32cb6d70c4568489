"""Where a warning points: the user's line, not sparsekern's (standard library only)."""
from __future__ import annotations

import os
import sys

_ROOT = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _inside(filename: str) -> bool:
    """Whether a frame of ``filename`` belongs to sparsekern or torch (torch's decorators,
    e.g. no_grad's wrapper, sit between sparsekern's frames and the user's)."""
    if filename.startswith(_ROOT):
        return True
    torch = sys.modules.get("torch")
    where = getattr(torch, "__file__", None)
    return bool(where) and filename.startswith(os.path.dirname(where) + os.sep)


def user_stacklevel() -> int:
    """warnings.warn's stacklevel, for the function that calls this one, of the first frame
    outside sparsekern and torch: the warning names the user's line whichever entry point
    (and however many of sparsekern's own calls) led to it."""
    frame, level = sys._getframe(2), 2
    while frame is not None and _inside(frame.f_code.co_filename):
        frame, level = frame.f_back, level + 1
    return level
