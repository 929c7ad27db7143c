"""Zeroed tensors for the LoRA wrapper's weight caches, carved out of large 2 MiB-aligned slabs
that Linux is asked to back with transparent huge pages.

Why: every decode step reads each active adapter's cached weights from DRAM (the base model's
layers evict them in between), tens of MB per step spread over hundreds of small tensors. With
4 KiB pages those reads also miss the TLB and stop the hardware prefetcher at every page: on
them a decode step's native calls took 1.2-1.3x as long (``benchmarks/lora_op.py``). Linux's default
THP mode is ``madvise``, so nothing is huge unless asked for. Where the call is missing (not
Linux) or refused, the slabs are ordinary pages: same numbers, a little slower.

Tensors are never freed one by one: a cache lives as long as the engine that built it.
"""

import math
import mmap

import torch

HUGE_PAGE = 2 << 20
SLAB_BYTES = 64 << 20
ALIGN = 64  # each tensor starts on its own cache line


class WeightArena:
    def __init__(self, slab_bytes: int = SLAB_BYTES):
        self._slab_bytes = slab_bytes
        self._slab: torch.Tensor | None = None  # (bytes,) uint8, zero-filled
        self._used = 0
        self.huge_pages = hasattr(mmap, "MADV_HUGEPAGE")  # False once the kernel refuses

    def zeros(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        nbytes = math.prod(shape) * dtype.itemsize
        if self._slab is None or self._used + nbytes > self._slab.numel():
            self._slab = self._new_slab(max(self._slab_bytes, _round_up(nbytes, HUGE_PAGE)))
            self._used = 0
        start, self._used = self._used, _round_up(self._used + nbytes, ALIGN)
        return self._slab[start:start + nbytes].view(dtype).view(shape)

    def _new_slab(self, nbytes: int) -> torch.Tensor:
        # An anonymous mapping is zero-filled and untouched: pages appear when first written,
        # and after the advice they are huge pages wherever a 2 MiB-aligned range fits.
        # Private: a shared anonymous mapping is shmem, which THP leaves alone by default.
        mapping = mmap.mmap(-1, nbytes + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        if self.huge_pages:
            try:
                mapping.madvise(mmap.MADV_HUGEPAGE)
            except OSError:  # THP disabled ("never") or not supported here
                self.huge_pages = False
        raw = torch.frombuffer(mapping, dtype=torch.uint8)  # holds the mapping for as long as it lives
        skip = -raw.data_ptr() % HUGE_PAGE
        return raw[skip:skip + nbytes]


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple
