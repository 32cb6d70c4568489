"""Real English text that is on every machine: sentences from the docstrings of Python's
standard library, split into disjoint sets for calibration, distillation and evaluation.

Offline by construction (no data set download). The stdlib's docstrings are prose written
by people (descriptions of functions and classes), which is what a sentence encoder sees in
practice; code-like fragments are filtered out.
"""
from __future__ import annotations

import importlib
import inspect
import random
import re
import warnings
from dataclasses import dataclass
from typing import Iterable, List, Sequence

#: Standard-library modules read for text, in a fixed order (the corpus is deterministic for
#: one Python version). Only pure-Python modules with prose docstrings; none has import-time
#: side effects.
STDLIB_MODULES = (
    "argparse", "asyncio", "base64", "bisect", "calendar", "cmd", "codecs", "collections",
    "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal",
    "difflib", "email", "enum", "fileinput", "fnmatch", "fractions", "ftplib", "functools",
    "getopt", "gettext", "glob", "gzip", "hashlib", "heapq", "hmac", "html", "http.client",
    "http.cookies", "http.server", "imaplib", "importlib", "inspect", "io", "ipaddress",
    "json", "locale", "logging", "logging.handlers", "lzma", "mailbox", "mimetypes",
    "multiprocessing", "netrc", "numbers", "operator", "optparse", "os", "pathlib", "pdb",
    "pickle", "pickletools", "platform", "plistlib", "poplib", "pprint", "profile", "pstats",
    "queue", "quopri", "random", "re", "reprlib", "sched", "secrets", "selectors", "shelve",
    "shlex", "shutil", "smtplib", "socket", "socketserver", "ssl", "statistics", "string",
    "subprocess", "tarfile", "tempfile", "textwrap", "threading", "timeit", "tokenize",
    "trace", "traceback", "turtle", "typing", "unittest", "urllib.parse", "urllib.request",
    "uuid", "warnings", "wave", "weakref", "webbrowser", "xml.dom.minidom",
    "xml.etree.ElementTree", "zipfile", "zipimport",
)

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")
_CODE_CHARS = set("()[]{}=<>_*`|\\/:;#@$%^~\"")


def _docstrings(module_names: Iterable[str]) -> Iterable[str]:
    for name in module_names:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mod = importlib.import_module(name)
        except Exception:  # a module missing on this build (e.g. turtle without tkinter)
            continue
        if mod.__doc__:
            yield mod.__doc__
        for _, obj in sorted(vars(mod).items()):
            if getattr(obj, "__module__", None) != mod.__name__:
                continue
            doc = inspect.getdoc(obj) if (inspect.isclass(obj) or inspect.isfunction(obj)) else None
            if doc:
                yield doc
            if inspect.isclass(obj):
                for _, meth in sorted(vars(obj).items()):
                    if inspect.isfunction(meth) and meth.__doc__:
                        yield inspect.getdoc(meth)


def _is_prose(s: str, min_words: int, max_words: int) -> bool:
    words = _WORD.findall(s)
    if not (min_words <= len(words) <= max_words):
        return False
    if sum(c in _CODE_CHARS for c in s) > 2 or any(c.isdigit() for c in s[:1]):
        return False
    letters = sum(c.isalpha() for c in s)
    return letters >= 0.75 * len(s.replace(" ", "")) and s[0].isupper() and s[-1] in ".!?"


def english_sentences(min_words: int = 6, max_words: int = 40,
                      modules: Sequence[str] = STDLIB_MODULES) -> List[str]:
    """Distinct prose sentences from the stdlib's docstrings, in a deterministic order.

    A sentence is kept when it has ``min_words``..``max_words`` words, starts with a capital
    letter, ends with . ! or ?, and has (almost) no code characters.
    """
    seen, out = set(), []
    for doc in _docstrings(modules):
        for para in re.split(r"\n\s*\n", doc):
            text = " ".join(para.split())
            for s in _SENTENCE_END.split(text):
                s = s.strip()
                if s not in seen and _is_prose(s, min_words, max_words):
                    seen.add(s)
                    out.append(s)
    return out


@dataclass(frozen=True)
class TextSplits:
    """Disjoint lists of sentences: calibration (pruning statistics), distillation (recovery
    training) and evaluation (held out from both)."""
    calib: List[str]
    distill: List[str]
    eval: List[str]


def text_splits(n_calib: int = 128, n_distill: int = 512, n_eval: int = 256,
                seed: int = 0) -> TextSplits:
    """Shuffle :func:`english_sentences` with ``seed`` and cut it into three disjoint sets.

    Raises ValueError when the corpus has fewer sentences than asked for.
    """
    for name, n in (("n_calib", n_calib), ("n_distill", n_distill), ("n_eval", n_eval)):
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"{name} must be an int >= 0, got {n!r}")
    pool = english_sentences()
    need = n_calib + n_distill + n_eval
    if need > len(pool):
        raise ValueError(f"asked for {need} sentences (calib {n_calib} + distill {n_distill} + "
                         f"eval {n_eval}); the offline corpus has {len(pool)}")
    random.Random(seed).shuffle(pool)
    return TextSplits(calib=pool[:n_calib], distill=pool[n_calib:n_calib + n_distill],
                      eval=pool[n_calib + n_distill:need])
