"""The plugin's CPU LoRA wrapper alone, without the engine: one decode step's LoRA work for
SmolLM2-135M's shapes (30 layers; q/k/v fused 576 -> 576+192+192 and o 576 -> 576; r = 16),
16 requests each with its own adapter out of 32 resident slots, on one thread (vLLM's CPU worker
runs the model on one). Between layers a 7 MB read stands in for the base layer's weights, so the
adapters' weights come from DRAM as they do in the engine.

Variants, called through ``GroupedPunicaWrapperCPU.add_lora_linear`` (the Python around the op
included), interleaved round by round in this one process:
- ``torch``: the wrapper's fallback path (fp32 caches, torch matmuls);
- ``native, 4 KiB pages``: the op, caches from ``torch.zeros`` (what the wrapper did before);
- ``native, no prefetch``: the op built from the same source without its software prefetch;
- ``native``: the op and caches as shipped (huge-page arena, prefetch);
- ``native, AVX2 build``: as shipped but compiled for x86-64-v3 (x86 only), as a machine
  without AVX-512 builds it.
Then one long prefill call (1024 rows of one adapter): native vs torch.

Prints a table and writes benchmarks/results/lora_op.json (versions, commit). What it does not
show: the engine's step (benchmarks/lora_profile.py, serving.py), other CPUs or thread counts.

    .venv/bin/python benchmarks/lora_op.py      # ~1 min on 2 cores (builds two variants)
"""

import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from vllm.lora.layers.utils import LoRAMapping  # noqa: E402

from benchmarks.bench_support import ROOT, run_metadata  # noqa: E402
from server.workers.vllm_plugin import KERNEL_ENV, native_lora_op  # noqa: E402
from server.workers.vllm_plugin.grouped_lora_cpu import GroupedPunicaWrapperCPU  # noqa: E402

LAYERS, SLOTS, RANK, HIDDEN, REQUESTS = 30, 32, 16, 576, 16
QKV, O = (576, 192, 192), (576,)
BASE_LAYER_BYTES = 7 << 20  # SmolLM2-135M: ~3.5M bf16 weights per decoder layer
REPS = int(os.environ.get("REPS", 30))
PREFILL_ROWS = 1024


def stacked(gen: torch.Generator, outs: tuple[int, ...]):
    """vLLM's slot tensors: A (S, 1, R, in) and B (S, 1, out_i, R) per slice, bf16."""
    a = tuple((torch.randn(SLOTS, 1, RANK, HIDDEN, generator=gen) * 0.05).bfloat16() for _ in outs)
    b = tuple((torch.randn(SLOTS, 1, o, RANK, generator=gen) * 0.05).bfloat16() for o in outs)
    return a, b


def op_variant(namespace: str, *, no_prefetch: bool = False, march: str = "native"):
    """The shipped source built another way, under its own op namespace (one process cannot load
    two libraries for the same one): without its software prefetch, or for another ``-march``."""
    from torch.utils import cpp_extension

    variant, m = re.subn(r"TORCH_LIBRARY(_IMPL)?\(peftserve", rf"TORCH_LIBRARY\1({namespace}",
                         native_lora_op.SOURCE.read_text())
    n = 1
    if no_prefetch:
        variant, n = re.subn(r"__builtin_prefetch\([^;]*\);", "(void)at;", variant)
    assert n == 1 and m == 2, "the kernel source changed: update this benchmark's variant"
    work = Path(tempfile.mkdtemp(prefix="lora-op-bench-"))
    (work / f"{namespace}.cpp").write_text(variant)
    cflags = [f for f in native_lora_op.CFLAGS if not f.startswith("-march=")] + [f"-march={march}"]
    cpp_extension.load(name=namespace, sources=[str(work / f"{namespace}.cpp")], build_directory=str(work),
                       extra_cflags=cflags, extra_ldflags=list(native_lora_op.LDFLAGS),
                       is_python_module=False, verbose=False)
    shutil.rmtree(work, ignore_errors=True)  # loaded already: the mapping outlives the file
    return getattr(torch.ops, namespace).grouped_lora


def new_wrapper(kernel: str, token_ids: list[int], layout: list[int], *, op=None, plain_pages=False):
    os.environ[KERNEL_ENV] = kernel
    wrapper = GroupedPunicaWrapperCPU(max_num_batched_tokens=4096, max_batches=64, device="cpu")
    if op is not None:
        wrapper._op = op
    if plain_pages:
        wrapper._arena.zeros = lambda shape, dtype: torch.zeros(shape, dtype=dtype)
    wrapper.update_metadata(LoRAMapping(token_ids, token_ids, is_prefill=False), layout, SLOTS + 1, 49152)
    return wrapper


def decode_step(wrapper, layers, base, x, ys) -> float:
    """Seconds in the wrapper's calls for one step (the stand-in base reads not counted)."""
    spent = 0.0
    for (qkv, o), weights in zip(layers, base):
        weights.sum()  # the base layer's weights pass through the caches
        started = time.perf_counter()
        wrapper.add_lora_linear(ys[0], x, *qkv, 1.0, QKV)
        wrapper.add_lora_linear(ys[1], x, *o, 1.0, O)
        spent += time.perf_counter() - started
    return spent


def main() -> None:
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    layers = [(stacked(gen, QKV), stacked(gen, O)) for _ in range(LAYERS)]
    base = [torch.ones(BASE_LAYER_BYTES // 8, dtype=torch.int64) for _ in range(LAYERS)]
    layout = list(range(1, SLOTS + 1))  # slot s holds adapter s + 1
    token_ids = [2 * i + 1 for i in range(REQUESTS)]  # 16 requests, 16 distinct adapters
    x = torch.randn(REQUESTS, HIDDEN, generator=gen).bfloat16()
    ys = (torch.zeros(REQUESTS, sum(QKV), dtype=torch.bfloat16), torch.zeros(REQUESTS, HIDDEN, dtype=torch.bfloat16))
    shipped = native_lora_op.load()
    assert shipped is not None, "the native op did not build here"
    variants = {
        "torch": new_wrapper("torch", token_ids, layout),
        "native, 4 KiB pages": new_wrapper("native", token_ids, layout, plain_pages=True),
        "native, no prefetch": new_wrapper("native", token_ids, layout,
                                           op=op_variant("peftserve_no_prefetch", no_prefetch=True)),
        "native": new_wrapper("native", token_ids, layout),
    }
    if platform.machine() == "x86_64":  # what a machine without AVX-512 compiles (8-float vectors)
        variants["native, AVX2 build"] = new_wrapper("native", token_ids, layout,
                                                     op=op_variant("peftserve_avx2", march="x86-64-v3"))
    times: dict[str, list[float]] = {name: [] for name in variants}
    for wrapper in variants.values():
        decode_step(wrapper, layers, base, x, ys)  # fills the caches
    for _ in range(REPS):
        for name, wrapper in variants.items():
            times[name].append(decode_step(wrapper, layers, base, x, ys))

    per_slot = sum(t[0].numel() for a, b in layers[0] for t in (*a, *b))  # one slot's weights in one layer
    weight_bytes = 2 * per_slot * REQUESTS * LAYERS  # bf16 bytes of the step's adapters
    reference = statistics.median(times["native"])
    rows = []
    for name, values in times.items():
        values = sorted(values)
        med = statistics.median(values)
        rows.append({"variant": name, "ms_per_step_median": 1e3 * med, "ms_q1": 1e3 * values[len(values) // 4],
                     "ms_q3": 1e3 * values[3 * len(values) // 4], "us_per_call": 1e6 * med / (2 * LAYERS),
                     "adapter_gb_per_s": weight_bytes / med / 1e9, "x_native": med / reference})

    prefill = {}
    prefill_x = torch.randn(PREFILL_ROWS, HIDDEN, generator=gen).bfloat16()
    prefill_y = torch.zeros(PREFILL_ROWS, sum(QKV), dtype=torch.bfloat16)
    for kernel in ("torch", "native"):
        wrapper = new_wrapper(kernel, [1] * PREFILL_ROWS, layout)
        qkv = layers[0][0]
        wrapper.add_lora_linear(prefill_y, prefill_x, *qkv, 1.0, QKV)
        samples = []
        for _ in range(REPS):
            started = time.perf_counter()
            wrapper.add_lora_linear(prefill_y, prefill_x, *qkv, 1.0, QKV)
            samples.append(time.perf_counter() - started)
        prefill[kernel] = 1e6 * statistics.median(samples)

    print(f"\none decode step's LoRA calls: {LAYERS} layers x (q/k/v, o), r={RANK}, {REQUESTS} adapters of {SLOTS} "
          f"slots, 1 thread, {weight_bytes / 1e6:.1f} MB of bf16 adapter weights, {REPS} interleaved rounds")
    print(f"{'variant':<24}{'ms/step':>9}{'q1-q3':>14}{'us/call':>9}{'GB/s':>7}{'x native':>10}")
    for r in rows:
        print(f"{r['variant']:<24}{r['ms_per_step_median']:>9.2f}{r['ms_q1']:>7.2f}-{r['ms_q3']:<6.2f}"
              f"{r['us_per_call']:>9.1f}{r['adapter_gb_per_s']:>7.1f}{r['x_native']:>10.3f}")
    print(f"prefill, {PREFILL_ROWS} rows of one adapter, one q/k/v call: native {prefill['native']:.0f} us, "
          f"torch {prefill['torch']:.0f} us")
    out = ROOT / "benchmarks" / "results" / "lora_op.json"
    out.write_text(json.dumps({"meta": run_metadata(), "layers": LAYERS, "slots": SLOTS, "rank": RANK,
                               "requests": REQUESTS, "reps": REPS, "adapter_bytes_per_step": weight_bytes,
                               "decode": rows, "prefill_us_per_qkv_call": prefill}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
