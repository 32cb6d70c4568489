"""Argument checks shared by the command lines (``python -m sparsekern demo`` and
``python -m sparsekern.bench``): argparse ``type=`` functions whose errors say what was
expected (argparse prefixes them with the flag: "argument --batches: expected an integer
>= 1, got 0"), and the output-folder check both CLIs run before any work. Standard library
only (rank 0 in docs/ARCHITECTURE.md)."""
from __future__ import annotations

import argparse
import math
import os
import tempfile
from typing import Optional


def int_at_least(low: int):
    """An argparse type: an integer >= ``low``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}")
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value}")
        return value
    parse.__name__ = f"int >= {low}"
    return parse


def _float(text: str, expected: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    value = _float(text, "a finite number > 0")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """An argparse type: a finite number >= 0."""
    value = _float(text, "a finite number >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def output_folder_problem(path: str) -> Optional[str]:
    """Why ``path`` cannot be (or become) a writable output folder, else None. Leaves
    nothing behind: a new folder's nearest existing ancestor must be a folder in which a
    (removed at once) test folder can be made."""
    if os.path.exists(path):
        if not os.path.isdir(path):
            return f"{path!r} exists and is not a folder; expected a folder (existing or new)"
        if not os.access(path, os.W_OK | os.X_OK):
            return f"the folder {path!r} is not writable"
        return None
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        return (f"cannot create the folder {path!r}: {parent!r} is not a folder; expected a "
                f"folder (existing or new)")
    try:  # os.access says "writable" to root even on /proc or a read-only mount: try it
        os.rmdir(tempfile.mkdtemp(prefix=".sparsekern-check-", dir=parent))
    except OSError as e:
        return f"cannot create the folder {path!r} in {parent!r}: {e.strerror}"
    return None
