"""peftserve's vLLM plugin inside a real worker (tiny Llama, real PEFT adapters, the gateway):
no request in a mixed batch is computed with another slot's adapter, adapter outputs equal
transformers + peft, and the plugin is what the worker process really runs.

The adapters are strong (random B ~ N(0, 0.5)): one applied where it does not belong changes the
first tokens and their log-probabilities by whole nats, far beyond bf16 batch noise.
"""

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

PROMPTS = ["The quick brown fox", "Once upon a time", "def main():", "Paris is the capital of"]
MAX_TOKENS = 6
# Measured on this tiny model: the same base request alone or in a mixed batch differs by <= 3e-5
# nats (bf16 batch noise); the worker vs transformers + peft in fp32 by <= 0.012; a leaked adapter
# moves log-probabilities by about 1 nat, and the reference adapters move them by > 1.
LOGPROB_TOLERANCE = 0.05


def generate(gateway, key: str, model: str, prompt: str) -> dict:
    with gateway.client(key) as c:
        resp = c.post("/v1/completions", json={
            "model": model, "prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0, "logprobs": 1,
            "return_tokens_as_token_ids": True})
    assert resp.status_code == 200, resp.text
    lp = resp.json()["choices"][0]["logprobs"]
    return {"ids": [int(t.split(":", 1)[1]) for t in lp["tokens"]], "logprobs": lp["token_logprobs"]}


def same_answer(got: dict, want: dict) -> bool:
    return got["ids"] == want["ids"] and max(
        abs(a - b) for a, b in zip(got["logprobs"], want["logprobs"])) <= LOGPROB_TOLERANCE


@pytest.fixture(scope="module")
def strong_adapters(gateway, lora_factory):
    """Tenant "mallory" holds one more strong adapter than the worker has batch slots
    (max_loras_per_batch=2), and as many as it keeps resident (3)."""
    names = []
    for seed in (41, 42, 43):
        name = f"strong-{seed}"
        assert gateway.add_adapter("mallory", name, lora_factory(seed, targets="qv")).status_code == 201
        names.append(name)
    return gateway.tenant_key("mallory"), names


@pytest.mark.skipif(torch.cuda.is_available(), reason="the plugin replaces the CPU path only; GPU workers keep vLLM's")
def test_worker_runs_the_plugin(gateway, strong_adapters):
    """Read from the worker's own log: vLLM names the wrapper class it built (punica_selector),
    and the plugin says whether its native op loaded."""
    log = "".join(p.read_text() for p in gateway.settings.logs_dir.glob("worker-tiny-v1*.log"))
    assert "Using GroupedPunicaWrapperCPU" in log
    assert "Using PunicaWrapperCPU" not in log
    assert "peftserve: native LoRA op loaded from" in log  # the C++ op, not the torch fallback


def test_base_requests_in_mixed_batches_get_base_answers(gateway, strong_adapters):
    """Tenant alice's base-model requests, batched with mallory's adapters with each adapter
    alone in turn (so each sits in every slot position over the rounds) and all at once."""
    mallory, adapters = strong_adapters
    alice = gateway.tenant_key("alice")
    alone = {p: generate(gateway, alice, "tiny", p) for p in PROMPTS}
    adapter_alone = {(a, p): generate(gateway, mallory, a, p) for a in adapters for p in PROMPTS[:2]}
    for a in adapters:  # the adapters really change the answer: a leak would show
        assert not same_answer(adapter_alone[(a, PROMPTS[0])], alone[PROMPTS[0]])

    rounds = [[a] for a in adapters] + [adapters, adapters[::-1]]
    wrong, wrong_adapter = [], []
    with ThreadPoolExecutor(16) as pool:
        for round_adapters in rounds:
            jobs = [("tiny", p, pool.submit(generate, gateway, alice, "tiny", p)) for p in PROMPTS * 2]
            jobs += [(a, p, pool.submit(generate, gateway, mallory, a, p)) for a in round_adapters for p in PROMPTS[:2]]
            for model, prompt, job in jobs:
                got = job.result()
                if model == "tiny" and not same_answer(got, alone[prompt]):
                    wrong.append((round_adapters, prompt, got, alone[prompt]))
                if model != "tiny" and not same_answer(got, adapter_alone[(model, prompt)]):
                    wrong_adapter.append((model, prompt, got, adapter_alone[(model, prompt)]))
    assert not wrong, f"{len(wrong)} base answers changed in mixed batches, first: {wrong[0]}"
    assert not wrong_adapter, f"{len(wrong_adapter)} adapter answers changed, first: {wrong_adapter[0]}"


def hf_logprobs(base_dir, adapter_dir, prompt_ids: list[int], continuation: list[int]):
    """transformers + peft, fp32, teacher-forced on the worker's tokens: (log p of each token,
    the best log p at each position)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, adapter_dir)
    ids = torch.tensor([prompt_ids + continuation])  # (1, P + C)
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt_ids) - 1:-1]  # (C, vocab): predicts each continuation token
    logp = torch.log_softmax(logits.float(), dim=-1)
    chosen = logp[torch.arange(len(continuation)), torch.tensor(continuation)]  # (C,)
    return chosen.tolist(), logp.max(dim=-1).values.tolist()


REFERENCE_CASES = [(4, "attn", False), (8, "attn", False), (16, "attn", False), (8, "all", False),
                   (16, "all", True), (4, "qv", True)]


@pytest.mark.parametrize("rank,targets,rslora", REFERENCE_CASES,
                         ids=[f"r{r}-{t}{'-rslora' if s else ''}" for r, t, s in REFERENCE_CASES])
def test_adapter_output_equals_transformers_peft(gateway, tiny_base_dir, lora_factory, rank, targets, rslora):
    from transformers import AutoTokenizer

    folder = lora_factory(100 + rank, rank=rank, targets=targets, rslora=rslora)
    name = f"ref-r{rank}-{targets}{'-rs' if rslora else ''}"
    assert gateway.add_adapter("refs", name, folder).status_code == 201
    key = gateway.tenant_key("refs")
    prompt_ids = AutoTokenizer.from_pretrained(tiny_base_dir)(PROMPTS[0])["input_ids"]
    got = generate(gateway, key, name, PROMPTS[0])
    want, best = hf_logprobs(tiny_base_dir, folder, prompt_ids, got["ids"])
    base, _ = hf_logprobs(tiny_base_dir, None, prompt_ids, got["ids"])
    effect = max(abs(a - b) for a, b in zip(want, base))
    assert effect > 1.0, f"adapter too weak to prove anything (moves log p by {effect:.2f})"
    diffs = [abs(a - b) for a, b in zip(got["logprobs"], want)]
    assert max(diffs) <= LOGPROB_TOLERANCE, f"vLLM vs transformers+peft: {got['logprobs']} vs {want}"
    # Each greedy token of the worker is the reference's best, up to a near tie.
    assert all(w >= b - LOGPROB_TOLERANCE for w, b in zip(want, best)), (want, best)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the plugin replaces the CPU path only; GPU workers keep vLLM's")
def test_a_worker_without_the_plugin_is_never_served(tmp_path, tiny_base_dir):
    """vLLM only logs a plugin that fails to load; here VLLM_PLUGINS leaves ours out, as a worker
    installed without peftserve would. The real worker starts and answers /health, and the
    supervisor refuses to route to it (it would leak adapters across a mixed batch)."""
    import asyncio

    from server.workers.worker_process import ManagedWorker
    from server.metrics import GatewayMetrics
    from tests.gateway_harness import free_port, gateway_settings

    async def start_and_judge(env: dict) -> tuple[bool, bool]:
        settings = gateway_settings(tmp_path / f"data-{len(env)}", database_url=None,
                                    worker_env={"VLLM_ENABLE_V1_MULTIPROCESSING": "0", **env})
        worker = ManagedWorker("tiny@1", str(tiny_base_dir), free_port(), settings, GatewayMetrics(10))
        worker._spawn()
        try:
            return await worker._wait_healthy(), worker._runs_safe_lora_path()
        finally:
            worker._kill()
            await worker.client.aclose()

    healthy, safe = asyncio.run(start_and_judge({"VLLM_PLUGINS": "lora_filesystem_resolver"}))
    assert healthy and not safe
    healthy, safe = asyncio.run(start_and_judge({}))
    assert healthy and safe
