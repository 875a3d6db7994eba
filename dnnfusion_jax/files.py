"""Where dnnfusion keeps its files, and how it writes them: the cache directory (compiled
kernels, Pallas tunings, profiling databases) and atomic writes.

Every stage that persists something uses these, so they sit below all of them. The cache holds
shared libraries that get loaded into the process, so a directory is used only when it is safe:
``usable_cache_dir`` creates it with mode 0700 and checks that it is a directory this user owns,
that nobody else can write (no group/other write bit) and that a file can be written in it;
otherwise it warns once, naming ``DNNFUSION_CACHE_DIR`` and the problem, and returns a private
per-user directory under the system's temporary folder instead.

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
import stat
import tempfile
import warnings
from pathlib import Path


CACHE_ADVICE = ("Set DNNFUSION_CACHE_DIR to a directory that you own and that nobody else can "
                "write.")
"""What every warning about an unsafe or unusable cache directory tells the user to do."""


def default_cache_dir() -> Path:
    """``$DNNFUSION_CACHE_DIR``, else ``$XDG_CACHE_HOME/dnnfusion_jax``, else ``~/.cache/...``."""
    if explicit := os.environ.get("DNNFUSION_CACHE_DIR"):
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "dnnfusion_jax"


def cache_dir_problem(folder: str | Path) -> str | None:
    """Why ``folder`` is no safe cache directory, or None; creates it (mode 0700) when missing.

    Judged by owner and mode bits (``os.stat``), not by trying, so that it holds for root too.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp()) / "cache"
        >>> cache_dir_problem(folder), oct(folder.stat().st_mode & 0o777)
        (None, '0o700')
        >>> folder.chmod(0o777)
        >>> cache_dir_problem(folder)
        'writable by others (mode 0o777)'
        >>> cache_dir_problem("/proc/dnnfusion")[:25]
        'cannot create or use it: '
    """
    folder = Path(folder)
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.stat(folder)
        if problem := _unsafe_owner_or_mode(info):
            return problem
        if stat.S_ISDIR(info.st_mode) and not info.st_mode & 0o200:
            return f"not writable by its owner (mode {oct(info.st_mode & 0o777)})"
        with tempfile.TemporaryFile(dir=folder, prefix=".probe-"):
            pass  # a read-only mount, /proc or an immutable folder fail here, root or not
    except OSError as error:
        return f"cannot create or use it: {type(error).__name__}: {error}"
    return None


def untrusted_reason(path: str | Path) -> str | None:
    """Why a cached file or folder must not be loaded from (owned by another user, or writable
    by group or others), or None when it is safe or absent.

    Example:
        >>> import tempfile
        >>> planted = Path(tempfile.mkdtemp()) / "lib.so"
        >>> untrusted_reason(planted) is None
        True
        >>> planted.write_bytes(b"")
        0
        >>> planted.chmod(0o666)
        >>> untrusted_reason(planted)
        'writable by others (mode 0o666)'
    """
    try:
        return _unsafe_owner_or_mode(os.stat(path))
    except FileNotFoundError:
        return None


def _unsafe_owner_or_mode(info: os.stat_result) -> str | None:
    if not stat.S_ISDIR(info.st_mode) and not stat.S_ISREG(info.st_mode):
        return "neither a directory nor a regular file"
    if info.st_uid != os.getuid():
        return f"owned by uid {info.st_uid}, not by this user (uid {os.getuid()})"
    if info.st_mode & 0o022:
        return f"writable by others (mode {oct(info.st_mode & 0o777)})"
    return None


def private_cache_dir() -> Path:
    """This user's private fallback cache: ``<temporary folder>/dnnfusion_jax-<uid>``, mode 0700
    and owned by the user (a fresh ``mkdtemp`` folder if that name is taken by someone else).

    Example:
        >>> folder = private_cache_dir()
        >>> folder.is_dir() and untrusted_reason(folder) is None
        True
    """
    folder = Path(tempfile.gettempdir()) / f"dnnfusion_jax-{os.getuid()}"
    if cache_dir_problem(folder) is None:
        return folder
    return _fresh_private_dir(tempfile.gettempdir())


@functools.cache
def _fresh_private_dir(parent: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"dnnfusion_jax-{os.getuid()}-", dir=parent))


def usable_cache_dir(requested: str | Path | None = None) -> Path:
    """``requested`` (default: ``default_cache_dir()``) when ``cache_dir_problem`` finds nothing
    wrong with it, else ``private_cache_dir()`` after one warning per folder that names the
    folder, the problem and ``DNNFUSION_CACHE_DIR``.

    Example:
        >>> import tempfile, warnings
        >>> good = Path(tempfile.mkdtemp())
        >>> usable_cache_dir(good) == good
        True
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     usable_cache_dir("/proc/nowhere") == private_cache_dir()
        True
        >>> "DNNFUSION_CACHE_DIR" in str(caught[0].message)
        True
    """
    folder = Path(requested) if requested else default_cache_dir()
    problem = cache_dir_problem(folder)
    if problem is None:
        return folder
    private = private_cache_dir()
    warn_once(f"dnnfusion: the kernel cache {folder} is not usable ({problem}); using the "
              f"private cache {private} instead. {CACHE_ADVICE}")
    return private


@functools.cache
def warn_once(message: str) -> None:
    """Warns (RuntimeWarning) the first time this process sees ``message``, never again.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn_once("a doctest's message"); warn_once("a doctest's message")
        >>> len(caught)
        1
    """
    warnings.warn(message, RuntimeWarning, stacklevel=3)


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
