"""On-disk cache of measurements, keyed by everything a timing depends on.

Each entry is one JSON file ``<root>/<kind>/<digest>.json`` holding ``{"key": key,
"value": value}``; the digest is a hash of the canonical JSON of the key, and a loaded
file counts only when its stored key equals the requested one (so a hash collision or a
hand-edited file is a miss, never a wrong hit). Writes go to a temporary file first and
are renamed into place, so concurrent processes never read half a file.

Root: ``$SPARSEKERN_CACHE`` if set, else ``~/.cache/sparsekern``. A root that cannot be
read is no cache (every lookup a miss); one that cannot be written (not a folder, no
permission, read-only, full) warns once per cache and stores nothing: the measurements
still serve the call.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Optional, Union

ENV_VAR = "SPARSEKERN_CACHE"
_ROOT_ARG = "DiskCache(root=...)"  # how a write error names a root the caller gave


def cache_root() -> Path:
    """``$SPARSEKERN_CACHE``, else ``~/.cache/sparsekern``."""
    env = os.environ.get(ENV_VAR, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sparsekern"


def canonical(key: dict) -> str:
    """The key as JSON with sorted keys (tuples become lists)."""
    return json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)


def digest(key: dict) -> str:
    return hashlib.sha256(canonical(key).encode()).hexdigest()[:24]


class DiskCache:
    """JSON entries under ``root/kind``; counts hits and misses (``hits``, ``misses``).

    ``enabled=False`` makes every lookup a miss and every store a no-op.
    """

    def __init__(self, kind: str, root: Optional[Union[str, os.PathLike]] = None,
                 enabled: bool = True):
        if not kind or "/" in kind:
            raise ValueError(f"kind must be a plain folder name, got {kind!r}")
        self.kind = kind
        self.root = Path(root) if root is not None else cache_root()
        self.enabled = enabled
        self.hits = 0
        self.misses = 0
        self._warned = False
        # How the root was chosen, for a write error: the argument, the variable or neither.
        self._chosen_by = (_ROOT_ARG if root is not None else
                           ENV_VAR if os.environ.get(ENV_VAR, "").strip() else None)

    @property
    def folder(self) -> Path:
        return self.root / self.kind

    def path(self, key: dict) -> Path:
        return self.folder / f"{digest(key)}.json"

    def load(self, key: dict) -> Optional[dict]:
        """The value stored under ``key``, or None (missing, unreadable or another key)."""
        if self.enabled:
            try:
                with open(self.path(key)) as f:
                    blob = json.load(f)
                if isinstance(blob, dict) and canonical(blob.get("key", {})) == canonical(key):
                    self.hits += 1
                    return blob["value"]
            except (OSError, ValueError, KeyError):
                pass
        self.misses += 1
        return None

    def store(self, key: dict, value: dict) -> Optional[Path]:
        """Write ``value`` under ``key`` (atomically); returns the file, None when disabled
        or when the folder cannot be written (a warning says why; see _unwritable)."""
        if not self.enabled:
            return None
        try:
            return self._write(key, value)
        except OSError as e:  # the caller's measurements must survive a bad cache folder
            self._unwritable(e)
            return None

    def _unwritable(self, err: OSError) -> None:
        """One warning per cache naming its folder, the variable that chose it and ``err``."""
        if self._warned:
            return
        self._warned = True
        how = f" (set by {self._chosen_by})" if self._chosen_by else ""
        fix = "" if self._chosen_by == _ROOT_ARG else f"; set {ENV_VAR} to a writable folder"
        warnings.warn(f"sparsekern cache: cannot write to {str(self.root)!r}{how}: "
                      f"{type(err).__name__}: {err}; nothing is cached{fix}", RuntimeWarning,
                      stacklevel=3)

    def _write(self, key: dict, value: dict) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(key)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=self.folder)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"key": json.loads(canonical(key)), "value": value}, f, indent=1)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return path
