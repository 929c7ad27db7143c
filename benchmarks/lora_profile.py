"""Where the plugin's time goes: the engine in-process, SmolLM2-135M-Instruct, 16 requests x 32
tokens, with each of the plugin's LoRA calls timed per module (q/k/v, o, gate/up, down) and phase
(calls on modules no adapter targets return at once and are listed too).

Rows, one engine each (in this process, one after the other): LoRA disabled; then for each of the
plugin's two paths (``torch``, and ``native``: its C++ op) 1 adapter and 16 distinct adapters
(r = 16, q,k,v,o); LoRA disabled again (the drift between the two is this machine's noise).
Prints a table and writes benchmarks/results/lora_profile.json with the versions and the commit.

    .venv/bin/python benchmarks/lora_profile.py      # ~5 min on 2 cores
"""

import collections
import gc
import json
import os
import sys
import time
from pathlib import Path

os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the engine in this process, so its calls can be timed
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_support import CACHE, PROMPT, ROOT, demo_base_dir, make_adapters, run_metadata
from server.workers.vllm_plugin import KERNEL_ENV, grouped_lora_cpu
from server.settings import DEFAULT_LORA_TARGETS

REQUESTS, TOKENS, RANK = 16, 32, 16
timings: dict[str, list[float]] = collections.defaultdict(list)


def timed_add_lora_linear(original):
    def add_lora_linear(self, y, x, a, b, scale, output_slices, **kwargs):
        started = time.perf_counter()
        original(self, y, x, a, b, scale, output_slices, **kwargs)
        phase = "decode" if x.shape[0] <= REQUESTS else "prefill"
        # q/k/v and gate/up are fused modules (3 and 2 slices); down_proj reads the wider FFN input.
        kind = {3: "q/k/v", 2: "gate/up"}.get(len(output_slices)) or ("down" if x.shape[-1] > sum(output_slices)
                                                                       else "o")
        timings[f"{kind} {phase}"].append(time.perf_counter() - started)
    return add_lora_linear


def run(base_dir: Path, adapters: list[Path] | None) -> float:
    """Tokens per second of one generate call after a warm-up (the adapters loaded)."""
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    lora = {} if adapters is None else dict(enable_lora=True, max_loras=16, max_lora_rank=RANK, max_cpu_loras=32,
                                            lora_target_modules=list(DEFAULT_LORA_TARGETS))
    llm = LLM(model=str(base_dir), enforce_eager=True, max_model_len=2048, **lora)
    params = SamplingParams(max_tokens=TOKENS, ignore_eos=True, temperature=0)
    requests = None if adapters is None else [
        LoRARequest(f"a{i % len(adapters)}", i % len(adapters) + 1, str(adapters[i % len(adapters)]))
        for i in range(REQUESTS)]
    llm.generate([PROMPT] * REQUESTS, params, lora_request=requests, use_tqdm=False)  # warm-up
    timings.clear()
    started = time.perf_counter()
    llm.generate([PROMPT] * REQUESTS, params, lora_request=requests, use_tqdm=False)
    seconds = time.perf_counter() - started
    del llm
    gc.collect()
    return REQUESTS * TOKENS / seconds


def main() -> None:
    base_dir = demo_base_dir(CACHE / "base-data")
    adapters = make_adapters(base_dir, CACHE / "adapters", 16, rank=RANK)
    wrapper = grouped_lora_cpu.GroupedPunicaWrapperCPU
    wrapper.add_lora_linear = timed_add_lora_linear(wrapper.add_lora_linear)
    rows = []
    engines = [("LoRA disabled", None, None)]
    for kernel in ("torch", "native"):
        engines += [(f"plugin {kernel}, 1 adapter", kernel, adapters[:1]),
                    (f"plugin {kernel}, 16 adapters", kernel, adapters)]
    for label, kernel, chosen in [*engines, ("LoRA disabled again", None, None)]:
        os.environ[KERNEL_ENV] = kernel or "native"  # read when the engine builds its LoRA wrapper
        tok_per_s = run(base_dir, chosen)
        calls = {k: {"calls": len(v), "us_per_call": 1e6 * sum(v) / len(v), "seconds": sum(v)}
                 for k, v in sorted(timings.items())}
        rows.append({"label": label, "tok_per_s": tok_per_s, "lora_calls": calls})
    base = (rows[0]["tok_per_s"] + rows[-1]["tok_per_s"]) / 2
    print(f"\n{'engine':<30}{'tok/s':>8}{'x disabled':>12}  LoRA calls (us per call, calls)")
    for r in rows:
        calls = ", ".join(f"{k} {c['us_per_call']:.0f} us x{c['calls']}" for k, c in r["lora_calls"].items())
        print(f"{r['label']:<30}{r['tok_per_s']:>8.1f}{r['tok_per_s'] / base:>12.3f}  {calls}")
    out = ROOT / "benchmarks" / "results" / "lora_profile.json"
    out.write_text(json.dumps({"meta": run_metadata(), "requests": REQUESTS, "tokens": TOKENS, "rank": RANK,
                               "disabled_tok_per_s_mean": base, "rows": rows}, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
