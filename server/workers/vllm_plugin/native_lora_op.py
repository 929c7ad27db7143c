"""Builds and loads ``torch.ops.peftserve.grouped_lora`` (grouped_lora_kernel.cpp) on this machine.

Compiled here with ``-march=native`` because the vectorised loops are what make it fast where
the arithmetic counts (an AVX2 build: 1.05x slower in a memory-bound decode step,
benchmarks/lora_op.py; 1.4x on one call in an earlier one-off measurement), so a build is only
reused on a machine with the same CPU features, torch and source: all part of the file name's key (a
cached build needs no compiler). Builds happen in a private folder and are moved into the cache
atomically: two workers starting at once may both compile (about 10 s on 2 cores), never read a
half-written library; a cache folder that cannot be written means a private temporary build.
``deploy/install-python-env.sh`` builds it once at install time (``python -m`` this module).

Anything that stops the build (no C++ compiler, no Python headers) is logged and answered with
None: the wrapper then runs its torch path, slower and just as correct.
"""

import hashlib
import logging
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

# Under vLLM's logger so that the lines land in the worker's log (vLLM gives only "vllm" a handler).
log = logging.getLogger("vllm.peftserve.native_lora_op")

SOURCE = Path(__file__).with_name("grouped_lora_kernel.cpp")
CACHE_ENV = "PEFTSERVE_KERNEL_CACHE"  # where built libraries are kept (default ~/.cache/peftserve/kernels)
CFLAGS = ("-O3", "-march=native", "-fopenmp")
# torch's wheel ships libgomp.so.1 and loads it first: the library links that same soname, so one
# OpenMP runtime (torch's threads, as vLLM bound them) runs both torch's ops and ours.
LDFLAGS = ("-fopenmp",)

_loaded: dict[str, Callable | None] = {}


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "peftserve" / "kernels"


def build_key() -> str:
    """Everything the compiled library depends on: reuse it only where all of it is the same."""
    parts = [SOURCE.read_bytes(), torch.__version__.encode(), " ".join(CFLAGS + LDFLAGS).encode(),
             platform.machine().encode(), " ".join(platform.libc_ver()).encode(), _cpu_features().encode()]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:20]


def _cpu_features() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):  # x86, arm
                return " ".join(sorted(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return platform.processor()


def library_path(key: str | None = None) -> Path:
    return cache_dir() / f"peftserve_grouped_lora_{key or build_key()}.so"


def load() -> Callable | None:
    """The op, built if this machine has no build of it yet; None (logged) when it cannot be."""
    try:
        key = build_key()
    except OSError as exc:  # e.g. the source is missing from an installed copy
        log.warning("peftserve: native LoRA op unavailable (%s); using the torch path", exc)
        return None
    if key not in _loaded:
        _loaded[key] = _load(key)
    return _loaded[key]


def _load(key: str) -> Callable | None:
    library = library_path(key)
    try:
        if _registered() is not None:
            # A second library defining the namespace would abort the process (c10 throws from a
            # static initialiser): whichever build this process loaded first stays.
            return _registered()
        if library.exists():
            try:
                torch.ops.load_library(str(library))
            except OSError:  # a damaged or foreign file under our key: build it again
                library.unlink(missing_ok=True)
                library = _build(key, library)
        else:
            library = _build(key, library)
        op = torch.ops.peftserve.grouped_lora
    except Exception as exc:  # noqa: BLE001 - any failure means: use the torch path, and say why
        log.warning("peftserve: native LoRA op unavailable (%s); using the torch path",
                    str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else type(exc).__name__)
        return None
    log.info("peftserve: native LoRA op loaded from %s", library)
    return op


def _registered() -> Callable | None:
    try:
        return torch.ops.peftserve.grouped_lora
    except (AttributeError, RuntimeError):
        return None


def _build(key: str, library: Path) -> Path:
    """Build into ``library``, or into a private temporary folder when its folder is read-only
    (an image built for another CPU); returns where the library is."""
    from torch.utils import cpp_extension

    try:
        library.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="build-", dir=library.parent))
    except OSError:
        work = Path(tempfile.mkdtemp(prefix="peftserve-kernel-"))
        library = work / library.name
    try:
        name = f"peftserve_grouped_lora_{key}"
        # Compiles, links and loads it into this process (torch.ops.load_library of the build);
        # it appends to the flag lists it is given, hence the copies.
        cpp_extension.load(name=name, sources=[str(SOURCE)], extra_cflags=list(CFLAGS), extra_ldflags=list(LDFLAGS),
                           build_directory=str(work), is_python_module=False, verbose=False, keep_intermediates=False)
        os.replace(work / f"{name}.so", library)
    finally:
        # Loaded already (the mapping outlives the file), so a private temporary build is not kept.
        shutil.rmtree(work, ignore_errors=True)
    return library


if __name__ == "__main__":  # install-time build: `python -m server.workers.vllm_plugin.native_lora_op`
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(0 if load() is not None else 1)
