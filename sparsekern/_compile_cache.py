"""Puts the identity of this sparsekern build into torch.compile's cache keys.

torch.compile caches its work on disk across processes (AOTAutograd and Inductor caches,
under /tmp/torchinductor_<user> by default). Their keys hold the graph Dynamo captured, the
inputs' metadata and torch's own config, but not the code behind a custom op: a graph that
calls ``torch.ops.sparsekern.spmm`` gets the same key under every sparsekern release. The
cached forward/backward graphs, however, were traced through the autograd formula and fake
kernels of the build that wrote them; after an upgrade they can call ops that no longer
exist, or exist with other meanings (seen in CI: a training step compiled by an older build
was served to a newer one and called the removed op ``sparsekern._spmm_autograd``).

``install`` appends ``sparsekern=<digest>`` to ``torch.compiler.config.cache_key_tag``, the
tag torch documents for breaking these caches; the digest covers every Python file of the
package and the compiled ``_C`` library, byte for byte. A tag the user set (for example with
TORCH_COMPILE_CACHE_KEY_TAG) is kept in front of it. Setting ``cache_key_tag`` to a new
string after importing sparsekern drops the part sparsekern added; call ``install()`` again
to restore it.
"""
from __future__ import annotations

import hashlib
import pathlib
import re
from typing import Optional

import torch

_PREFIX = "sparsekern="
_DIGEST: Optional[str] = None


def build_digest(root: pathlib.Path, compiled: Optional[pathlib.Path]) -> str:
    """A 20-hex-digit digest of the package's Python sources under ``root`` (relative paths
    and contents, sorted) and of the ``compiled`` library's bytes (None: no _C loaded)."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    h.update(b"_C\0")
    if compiled is not None:
        with open(compiled, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:20]


def tagged(tag: str, digest: str) -> str:
    """``tag`` with any earlier ``sparsekern=...`` part replaced by this digest's."""
    kept = [p for p in tag.split(";") if p and not re.fullmatch(_PREFIX + r"[0-9a-f]*", p)]
    return ";".join(kept + [_PREFIX + digest])


def install(compiled_file: Optional[str] = None) -> str:
    """Add this build's digest to torch.compile's cache key tag (idempotent). The digest is
    computed on the first call; ``compiled_file`` is the path of the loaded ``_C`` (None
    when it is not loaded). Returns the tag now in force ("" where torch has no tag)."""
    global _DIGEST
    config = getattr(getattr(torch, "compiler", None), "config", None)
    if config is None or not hasattr(config, "cache_key_tag"):  # torch without the tag
        return ""
    if _DIGEST is None:
        root = pathlib.Path(__file__).resolve().parent
        _DIGEST = build_digest(root, pathlib.Path(compiled_file) if compiled_file else None)
    config.cache_key_tag = tagged(config.cache_key_tag or "", _DIGEST)
    return config.cache_key_tag
