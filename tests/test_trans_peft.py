"""Trans-PEFT training on the tiny Llama: the FFN weakening mechanism, the trainer (resume:
tests/test_training_methods.py), and the result served by the real gateway."""

import json

import pytest
import torch

from adapters.training.config import TrainingConfig
from adapters.training.ffn_weakening import FFNWeakening, find_decoder_layers
from adapters.training.pipeline import prepare, run_training
from adapters.training.trainer import build_model
from adapters.errors import InvalidRequestError

WORDS = ["apple", "river", "stone", "cloud", "tiger", "lamp", "green", "music", "paper", "window"]


def reverse_task(n: int, seed: int = 0) -> bytes:
    import random

    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        words = rng.sample(WORDS, 3)
        lines.append(json.dumps({"prompt": "Reverse: " + " ".join(words) + "\nAnswer:",
                                 "completion": " " + " ".join(reversed(words))}))
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture()
def peft_model(tiny_base_dir):
    torch.manual_seed(0)
    model = build_model(tiny_base_dir, TrainingConfig(method="lora", lora_dropout=0.0), torch.device("cpu"))
    return model


def test_eval_mode_is_exactly_the_plain_model(peft_model):
    ids = torch.randint(0, 1000, (2, 12))
    peft_model.eval()
    with torch.no_grad():
        plain = peft_model(input_ids=ids).logits
        weakening = FFNWeakening(p_m=0.5, p_c=0.5).attach(peft_model)
        hooked = peft_model(input_ids=ids).logits
        assert torch.equal(plain, hooked)
        peft_model.train()
        assert not torch.equal(plain, peft_model(input_ids=ids).logits)
    weakening.detach()


def test_measured_rates_match_p_m_and_p_c_and_attention_always_runs(peft_model):
    layers = len(find_decoder_layers(peft_model))
    weakening = FFNWeakening(p_m=0.3, p_c=0.2).attach(peft_model)
    peft_model.train()
    forwards = 300
    with torch.no_grad():
        for _ in range(forwards):
            peft_model(input_ids=torch.randint(0, 1000, (2, 8)))
    s = weakening.stats
    assert s.masked / s.activations == pytest.approx(0.3, abs=0.01)
    assert s.skipped / s.ffn_calls == pytest.approx(0.2, abs=0.05)
    assert s.ffn_calls == s.attention_calls == forwards * layers


def test_dropped_ffn_passes_the_residual_unchanged(peft_model):
    layer = find_decoder_layers(peft_model)[0]
    seen = {}

    def first(value):
        return value[0] if isinstance(value, tuple) else value

    layer.register_forward_pre_hook(
        lambda m, args, kwargs: seen.__setitem__("x", first(args) if args else kwargs["hidden_states"]),
        with_kwargs=True)
    layer.self_attn.register_forward_hook(lambda m, a, out: seen.__setitem__("attn", first(out)))
    layer.register_forward_hook(lambda m, a, out: seen.__setitem__("out", first(out)))
    FFNWeakening(p_m=0.0, p_c=0.999999).attach(peft_model)
    peft_model.train()
    with torch.no_grad():
        peft_model(input_ids=torch.randint(0, 1000, (1, 6)))
    # (B, T, C): the layer's output is its input plus attention, nothing from the FFN
    assert torch.equal(seen["out"], seen["x"] + seen["attn"])


@pytest.mark.parametrize("bad,needle", [
    (b'{"prompt": "a", "completion": "b"}\n{not json\n', "line 2: not valid JSON"),
    (b'{"prompt": "a"}\n', "line 1"),
    (b'{"prompt": "a", "completion": "   "}\n', "line 1: 'completion' is empty"),
    (b'{"prompt": "a", "completion": "b", "extra": 1}\n', "line 1: extra"),
    (b'{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}\n', "line 1"),
    (b'{"prompt": "a", "completion": "b"}\n' * 2, "at least 4"),
    ((json.dumps({"prompt": "word " * 600, "completion": "x"}) + "\n").encode() * 5, "exceeds max_seq_len"),
])
def test_bad_training_files_are_refused_up_front(tiny_base_dir, bad, needle):
    with pytest.raises(InvalidRequestError) as e:
        prepare(tiny_base_dir, bad, None, TrainingConfig(held_out_fraction=0.0))
    assert needle in e.value.message


def test_unknown_hyperparameters_are_refused():
    with pytest.raises(ValueError, match="learning_rat"):
        TrainingConfig(learning_rat=0.1)


def test_training_lowers_the_loss_and_keeps_a_held_out_eval_set(tiny_base_dir, tmp_path):
    config = TrainingConfig(method="trans-peft", rank=8, max_steps=40, learning_rate=5e-3, batch_size=8,
                            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                            held_out_fraction=0.2, checkpoint_every=1000)
    data = prepare(tiny_base_dir, reverse_task(60), None, config)
    losses = []
    result = run_training(tiny_base_dir, data, config, tmp_path, on_progress=lambda p: losses.append(p.loss))
    assert len(losses) == 40
    # A random tiny model's logits are bounded (tied embeddings of std 0.02), so its loss cannot
    # fall far below ln(vocab) ~ 10.8; a drop of over half a nat is real learning.
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5
    assert data.n_eval == 12 and len(result.eval_set.splitlines()) == 12
    assert json.loads(result.eval_set.splitlines()[0])["expected"].strip()
    saved = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert saved["r"] == 8 and saved["peft_type"] == "LORA"

    # A plain PEFT LoRA: peft loads it onto the untouched base, and it changes the output.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_base_dir, dtype=torch.float32).eval()
    ids = torch.randint(0, 1000, (1, 8))
    with torch.no_grad():
        plain = base(input_ids=ids).logits
        tuned = PeftModel.from_pretrained(base, result.adapter_dir).eval()(input_ids=ids).logits
    assert not torch.allclose(plain, tuned)


def test_trained_adapter_is_served_through_the_gateway(gateway, tiny_base_dir, tmp_path):
    from tests.test_serving import complete
    from tests.test_uploads import folder_files, upload

    config = TrainingConfig(rank=8, max_steps=10, learning_rate=3e-3)
    result = run_training(tiny_base_dir, prepare(tiny_base_dir, reverse_task(20), None, config), config, tmp_path)
    key = gateway.tenant_key("trainer-co")
    resp = upload(gateway, key, "reverser", folder_files(result.adapter_dir), trained_with="trans-peft")
    assert resp.status_code == 201 and resp.json()["status"] == "ready", resp.text
    assert complete(gateway, key, "reverser").status_code == 200
