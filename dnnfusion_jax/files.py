"""Where dnnfusion keeps its files, and how it writes them: the cache directory (compiled
kernels, Pallas tunings, profiling databases) and atomic writes.

Every stage that persists something uses these two, so they sit below all of them.

    >>> import os, tempfile
    >>> os.environ["DNNFUSION_CACHE_DIR"] = folder = tempfile.mkdtemp()
    >>> default_cache_dir() == Path(folder)
    True
    >>> write_atomically(default_cache_dir() / "settings.json", b"{}")
    >>> (default_cache_dir() / "settings.json").read_text()
    '{}'
    >>> del os.environ["DNNFUSION_CACHE_DIR"]
"""
from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path


def default_cache_dir() -> Path:
    """``$DNNFUSION_CACHE_DIR``, else ``$XDG_CACHE_HOME/dnnfusion_jax``, else ``~/.cache/...``."""
    if explicit := os.environ.get("DNNFUSION_CACHE_DIR"):
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "dnnfusion_jax"


@functools.cache
def umask() -> int:
    """The process's file-creation mask (read once: setting it is the only way to read it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomically(path: Path, data: bytes) -> None:
    """Writes ``data`` to a temporary file in ``path``'s directory and renames it into place:
    readers see the old file or the new one, never half of one (the folder must exist)."""
    fd, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:16]}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(partial, 0o644 & ~umask())  # mkstemp's 0600 would hide a shared cache
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
