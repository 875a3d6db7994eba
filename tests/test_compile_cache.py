"""The shared-library cache: keys, hits and misses, corruption, compile errors, concurrency."""
import ctypes
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from codegen import compile_cache
from codegen.compile_cache import (CompileError, build_shared_library, cache_stats,
                                   default_cache_dir, reset_cache_stats)

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "int answer(int x) { return 2 * x + 1; }"
FLAGS = ["-O2"]


@pytest.fixture(autouse=True)
def fresh_stats():
    reset_cache_stats()
    yield
    reset_cache_stats()


def answer(library: Path, x: int = 20) -> int:
    return ctypes.CDLL(str(library)).answer(x)


def run_python(code: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def test_miss_then_hit_and_entry_layout(tmp_path):
    library = build_shared_library(SOURCE, flags=FLAGS, cache_dir=tmp_path)
    assert (cache_stats().misses, cache_stats().hits) == (1, 0)
    assert cache_stats().compile_seconds > 0
    key = library.stem
    assert library == tmp_path / key[:2] / f"{key}.so" and len(key) == 64
    assert library.with_suffix(".sha256").exists()
    assert (library.parent / f"{key}.kernel.c").read_text() == SOURCE
    assert answer(library) == 41

    assert build_shared_library(SOURCE, flags=FLAGS, cache_dir=tmp_path) == library
    assert (cache_stats().misses, cache_stats().hits) == (1, 1)
    reset_cache_stats()
    assert cache_stats() == compile_cache.CacheStats()


def test_key_covers_sources_names_flags_and_target(tmp_path):
    base = build_shared_library(SOURCE, flags=FLAGS, cache_dir=tmp_path)
    others = [
        build_shared_library(SOURCE + "\n", flags=FLAGS, cache_dir=tmp_path),
        build_shared_library({"other.c": SOURCE}, flags=FLAGS, cache_dir=tmp_path),
        build_shared_library(SOURCE, flags=["-O1"], cache_dir=tmp_path),
        build_shared_library(SOURCE, flags=FLAGS, cache_dir=tmp_path, target="x86_64-test"),
    ]
    assert len({base, *others}) == 5 and cache_stats().misses == 5


def test_several_files_and_link_flags(tmp_path):
    sources = {"main.cc": 'extern "C" double f(double);\n'
                          'extern "C" double g(double x) { return f(x) + 1; }',
               "helper.cc": 'extern "C" double f(double x) { return x * 3; }'}
    library = build_shared_library(sources, compiler="g++", flags=["-O2", "-lm"],
                                   cache_dir=tmp_path)
    g = ctypes.CDLL(str(library)).g
    g.restype, g.argtypes = ctypes.c_double, [ctypes.c_double]
    assert g(2.0) == 7.0
    assert (library.parent / f"{library.stem}.helper.cc").exists()


def test_second_process_compiles_nothing(tmp_path):
    library = build_shared_library(SOURCE, flags=FLAGS, cache_dir=tmp_path)
    proc = run_python(
        "from codegen.compile_cache import build_shared_library as b, cache_stats as s\n"
        f"p = b({SOURCE!r}, flags={FLAGS!r}, cache_dir={str(tmp_path)!r})\n"
        "print(p, s().misses, s().hits)")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.split() == [str(library), "0", "1"]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "no_sidecar"])
def test_corrupt_entry_is_detected_and_rebuilt(tmp_path, damage):
    library = build_shared_library(SOURCE, flags=FLAGS, cache_dir=tmp_path)
    data = library.read_bytes()
    if damage == "truncate":
        library.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        library.write_bytes(b"\x7fELF" + bytes(len(data) - 4))
    else:
        library.with_suffix(".sha256").unlink()
    reset_cache_stats()
    assert build_shared_library(SOURCE, flags=FLAGS, cache_dir=tmp_path) == library
    assert (cache_stats().misses, cache_stats().rebuilt_corrupt) == (1, 1)
    assert answer(library) == 41
    assert build_shared_library(SOURCE, flags=FLAGS, cache_dir=tmp_path) == library
    assert cache_stats().hits == 1


def test_compile_error_carries_command_and_message(tmp_path):
    with pytest.raises(CompileError) as info:
        build_shared_library("int broken(void) { return undeclared_name; }", flags=FLAGS,
                             cache_dir=tmp_path)
    message = str(info.value)
    assert "undeclared_name" in message and "-shared" in message and "gcc" in message
    assert not list(tmp_path.rglob("*.so")) and not list(tmp_path.rglob("*.tmp"))


def test_missing_compiler_and_bad_file_names(tmp_path):
    with pytest.raises(CompileError, match="compiler not found"):
        build_shared_library(SOURCE, compiler="no-such-cc-3141", flags=FLAGS, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="plain file names"):
        build_shared_library({"../escape.c": SOURCE}, flags=FLAGS, cache_dir=tmp_path)


def test_default_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DNNFUSION_CACHE_DIR", str(tmp_path / "explicit"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("DNNFUSION_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "dnnfusion_jax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "dnnfusion_jax"


def test_environment_cache_dir_is_used(monkeypatch, tmp_path):
    monkeypatch.setenv("DNNFUSION_CACHE_DIR", str(tmp_path))
    assert build_shared_library(SOURCE, flags=FLAGS).is_relative_to(tmp_path)


def test_concurrent_builders_of_one_key_both_get_a_valid_library(tmp_path):
    # Both processes sleep until the same instant, then build the same key at once.
    start = time.time() + 1.5
    code = (
        "import ctypes, json, time\n"
        "from codegen.compile_cache import build_shared_library as b, cache_stats as s\n"
        f"time.sleep(max(0.0, {start!r} - time.time()))\n"
        f"p = b({SOURCE!r}, flags={FLAGS!r}, cache_dir={str(tmp_path)!r})\n"
        "print(json.dumps([str(p), ctypes.CDLL(str(p)).answer(20), s().misses]))")
    procs = [run_python(code) for _ in range(2)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    assert results[0][:2] == results[1][:2] and results[0][1] == 41
    assert results[0][2] + results[1][2] == 1  # the per-key lock: one compiled, one waited
    assert not list(tmp_path.rglob("*.tmp"))


# -- a safe cache: unusable or untrusted folders fall back to a private one, with one warning --

@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """The private fallback cache under this test's own temporary folder, warnings fresh."""
    from dnnfusion_jax import files
    folder = tmp_path / "system-tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    files.warn_once.cache_clear()
    yield folder / f"dnnfusion_jax-{os.getuid()}"
    files.warn_once.cache_clear()


def _unusable(kind: str, tmp_path: Path) -> Path:
    if kind == "proc":
        return Path("/proc/dnnfusion-cache")
    if kind == "file":
        (tmp_path / "a-file").write_text("not a folder")
        return tmp_path / "a-file"
    if kind == "dangling symlink":
        (tmp_path / "link").symlink_to(tmp_path / "gone")
        return tmp_path / "link"
    folder = tmp_path / "read-only"
    folder.mkdir(mode=0o500)  # root could still write: the owner's write bit is what counts
    return folder


@pytest.mark.parametrize("kind", ["proc", "file", "dangling symlink", "no write permission"])
def test_unusable_cache_dir_falls_back_to_the_private_cache_with_one_warning(
        kind, tmp_path, private_tmp, monkeypatch):
    monkeypatch.setenv("DNNFUSION_CACHE_DIR", str(_unusable(kind, tmp_path)))
    with pytest.warns(RuntimeWarning) as caught:
        library = build_shared_library(SOURCE, flags=FLAGS)
        assert build_shared_library(SOURCE + " ", flags=FLAGS).parent.parent == private_tmp
    assert library.is_relative_to(private_tmp) and answer(library) == 41
    assert len(caught) == 1, [str(w.message) for w in caught]
    message = str(caught[0].message)
    assert "DNNFUSION_CACHE_DIR" in message and str(private_tmp) in message
    assert os.stat(private_tmp).st_mode & 0o777 == 0o700
    assert os.stat(private_tmp).st_uid == os.getuid()


def test_lock_that_is_a_directory_falls_back(tmp_path, private_tmp):
    key = compile_cache.library_key({"kernel.c": SOURCE}, None, FLAGS)
    (tmp_path / key[:2] / f"{key}.lock").mkdir(parents=True, mode=0o700)
    (tmp_path / key[:2]).chmod(0o700)
    with pytest.warns(RuntimeWarning, match="IsADirectoryError.*DNNFUSION_CACHE_DIR"):
        library = build_shared_library(SOURCE, flags=FLAGS, cache_dir=tmp_path)
    assert library.is_relative_to(private_tmp) and answer(library) == 41


def test_new_cache_folders_have_mode_0700(tmp_path):
    library = build_shared_library(SOURCE, flags=FLAGS, cache_dir=tmp_path / "new" / "cache")
    for folder in (tmp_path / "new" / "cache", library.parent):
        assert os.stat(folder).st_mode & 0o777 == 0o700 & ~compile_cache.umask()


PLANTED = """#include <stdio.h>
__attribute__((constructor)) static void planted(void) {
  FILE *f = fopen("%s", "w"); if (f) { fputs("ran", f); fclose(f); } }
int answer(int x) { return 666; }
"""


def _plant(cache: Path, marker: Path) -> Path:
    """A valid-looking entry for SOURCE (right key, matching sidecar) that is someone else's
    library: loading it would run its constructor, which writes ``marker``."""
    key = compile_cache.library_key({"kernel.c": SOURCE}, None, FLAGS)
    with tempfile.TemporaryDirectory() as build:
        other = build_shared_library(PLANTED % marker, flags=FLAGS, cache_dir=build)
        data = other.read_bytes()
    entry = cache / key[:2]
    entry.mkdir(parents=True, exist_ok=True)
    (entry / f"{key}.so").write_bytes(data)
    (entry / f"{key}.sha256").write_text(hashlib.sha256(data).hexdigest() + "\n")
    return entry / f"{key}.so"


@pytest.mark.parametrize("how", ["world-writable folder", "world-writable library",
                                 "another user's library"])
def test_a_planted_library_is_never_loaded(how, tmp_path, private_tmp):
    if how == "another user's library" and os.getuid() != 0:
        pytest.skip("giving a file to another user needs root")
    cache, marker = tmp_path / "shared-cache", tmp_path / "planted-code-ran"
    cache.mkdir(mode=0o700)
    planted = _plant(cache, marker)
    if how == "world-writable folder":
        cache.chmod(0o777)
    elif how == "world-writable library":
        planted.chmod(0o666)
    else:
        os.chown(planted, 4321, -1)
    with pytest.warns(RuntimeWarning, match="DNNFUSION_CACHE_DIR") as caught:
        library = build_shared_library(SOURCE, flags=FLAGS, cache_dir=cache)
        again = build_shared_library(SOURCE, flags=FLAGS, cache_dir=cache)
    assert len(caught) == 1 and library == again and library.is_relative_to(private_tmp)
    assert answer(library) == 41 and not marker.exists()
    assert "others" in str(caught[0].message) or "uid 4321" in str(caught[0].message)
