"""The LoRA wrapper's cache allocator: zeroed, aligned, alive after the arena, on memory Linux may
back with huge pages (read back from /proc/self/smaps), and plain memory where that is refused."""

import gc
import mmap
from pathlib import Path

import torch

from server.workers.vllm_plugin import weight_arena
from server.workers.vllm_plugin.weight_arena import HUGE_PAGE, WeightArena

THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def thp_eligible(address: int) -> bool:
    """THPeligible of the mapping that holds ``address`` in this process."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            lo, hi = (int(v, 16) for v in head.split("-"))
            inside = lo <= address < hi
        elif inside and head == "THPeligible:":
            return line.split()[1] == "1"
    raise AssertionError(f"no mapping holds {address:#x}")


def test_tensors_are_zeroed_aligned_and_outlive_the_arena():
    arena = WeightArena(slab_bytes=4 << 20)
    shapes = [(32, 576, 48), (32, 16, 960), (3, 5, 7), (32, 576, 48)]  # the last one needs a new slab
    tensors = [arena.zeros(shape, dtype) for shape, dtype in zip(shapes, [torch.bfloat16, torch.float32] * 2)]
    assert [tuple(t.shape) for t in tensors] == shapes
    assert all(t.is_contiguous() and t.data_ptr() % weight_arena.ALIGN == 0 for t in tensors)
    assert all(not t.any() for t in tensors)
    assert tensors[0].data_ptr() % HUGE_PAGE == 0  # a slab starts on a huge-page boundary
    ends = sorted((t.data_ptr(), t.data_ptr() + t.numel() * t.element_size()) for t in tensors)
    assert all(end <= start for (_, end), (start, _) in zip(ends, ends[1:]))  # no two overlap
    for i, t in enumerate(tensors):
        t.fill_(i + 1)
    del arena
    gc.collect()
    assert [t.unique().tolist() for t in tensors] == [[1], [2], [3], [4]]


def test_one_tensor_larger_than_a_slab_gets_a_slab_of_its_own():
    arena = WeightArena(slab_bytes=HUGE_PAGE)
    big = arena.zeros((3 * HUGE_PAGE // 4,), torch.float32)  # 3 huge pages
    big.fill_(1)
    assert big.sum().item() == big.numel()


def test_slabs_are_advised_for_huge_pages():
    """Eligible wherever the machine's THP mode allows it at all (Linux; mode not "never")."""
    mode = THP_MODE.read_text() if THP_MODE.exists() else "[never]"
    arena = WeightArena()
    t = arena.zeros((32, 576, 48), torch.bfloat16)
    assert thp_eligible(t.data_ptr()) == ("[never]" not in mode)
    if "[madvise]" in mode:  # the usual mode: only what asks is eligible
        assert arena.huge_pages
        assert not thp_eligible(torch.zeros(1 << 20).data_ptr())  # torch's own large allocations are not


def test_refused_advice_gives_plain_pages(monkeypatch):
    class NoHugePages(mmap.mmap):
        def madvise(self, *args):
            raise OSError(22, "Invalid argument")

    monkeypatch.setattr(weight_arena.mmap, "mmap", NoHugePages)
    arena = WeightArena(slab_bytes=HUGE_PAGE)
    t = arena.zeros((4, 4), torch.bfloat16)
    assert not arena.huge_pages and not t.any()
    t.fill_(2)
    assert t.sum().item() == 32
