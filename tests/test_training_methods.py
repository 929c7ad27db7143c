"""BeamLoRA and Light-PEFT on the tiny Llama: the mechanisms, exactness of the plain LoRA each
writes, resume, composition with Trans-PEFT; served through the real gateway and worker in
tests/test_fine_tuning_api.py."""

import json
import threading

import pytest
import torch
from safetensors.torch import load_file

from adapters.format.base_architecture import read_architecture
from adapters.format.peft_config import parse_lora_config
from adapters.format.safetensors_header import read_header
from adapters.training.beam_lora import BeamLoRA
from adapters.training.config import TrainingConfig
from adapters.training.light_peft import LightPEFT, PrunePlan
from adapters.training.lora_modules import lora_layers, lora_weights
from adapters.training.pipeline import prepare, run_training
from adapters.training.trainer import TrainingCancelled, _Run, build_model
from adapters.validation.against_base import check_against_base
from tests.test_trans_peft import reverse_task

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
IDS = torch.tensor([[5, 17, 300, 42, 7, 99, 1000, 3]])  # (1, 8)


def served_logits(base_dir, adapter_dir) -> torch.Tensor:
    """The unpruned base with the written adapter, as PEFT (and so vLLM) reads it."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    with torch.no_grad():
        return PeftModel.from_pretrained(base, adapter_dir).eval()(input_ids=IDS).logits


def randomize_lora(model, seed: int) -> None:
    torch.manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            for w in lora_weights(layer):
                w.normal_(0, 0.3)


def accepted_by_upload_validation(base_dir, adapter_dir) -> None:
    config = parse_lora_config((adapter_dir / "adapter_config.json").read_bytes(), max_rank=64)
    check_against_base(config, read_header(adapter_dir / "adapter_model.safetensors"), read_architecture(base_dir))


def test_beamlora_writes_the_gate_folded_into_a_plain_lora(tiny_base_dir, tmp_path):
    config = TrainingConfig(method="beamlora", rank=8, target_modules=ALL, lora_dropout=0.0)
    model = build_model(tiny_base_dir, config, torch.device("cpu"))
    beam = BeamLoRA(model, config, steps=100)
    randomize_lora(model, 1)
    with torch.no_grad():
        for gate in beam.gates:
            gate.normal_(0, 0.05)  # at tau 0.05: scores from about 0.1 to 5, far from the plain LoRA
        gated = model.eval()(input_ids=IDS).logits
        for h in beam._hooks:
            h.remove()
        ungated = model(input_ids=IDS).logits
    assert not torch.allclose(gated, ungated, atol=1e-3)  # the gates matter
    out = beam.export(model, tmp_path / "adapter")
    saved = json.loads((out / "adapter_config.json").read_text())
    assert saved["r"] == 8 and saved["lora_alpha"] == 16 and set(saved) >= {"peft_type", "target_modules"}
    assert all(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in load_file(str(out / "adapter_model.safetensors")))
    torch.testing.assert_close(served_logits(tiny_base_dir, out), gated, atol=1e-4, rtol=1e-4)
    accepted_by_upload_validation(tiny_base_dir, out)


def test_beamlora_prunes_globally_and_refills_from_the_snapshot(tiny_base_dir):
    config = TrainingConfig(method="beamlora", rank=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    model = build_model(tiny_base_dir, config, torch.device("cpu"))
    beam = BeamLoRA(model, config, steps=100)
    randomize_lora(model, 2)
    run = _Run(model, beam, config, 100)
    model(input_ids=IDS, labels=IDS).loss.backward()
    run.optimizer.step()  # Adam moments exist for every LoRA weight and gate
    with torch.no_grad():
        for gate in beam.gates:
            gate.zero_()
        beam.gates[0][3] = -1.0  # module 0 rank 3: score ~ 4 e^-20, the only rank below average
        beam.gates[0][1] = 0.02  # module 0 rank 1: its best rank, the source that refills rank 3
    beam.snapshot = [tuple(w.detach().clone() + 1.0 for w in lora_weights(beam.layers[n])) for n in beam.names]
    before = [tuple(w.detach().clone() for w in lora_weights(beam.layers[n])) for n in beam.names]
    beam.prune_and_expand(10, run.optimizer)

    a, b = lora_weights(beam.layers[beam.names[0]])
    snap_a, snap_b = beam.snapshot[0]
    assert torch.equal(a[3], snap_a[1]) and torch.equal(b[:, 3], snap_b[:, 1])  # refilled from T/2 ago
    assert torch.equal(a[:3], before[0][0][:3])  # other ranks untouched
    assert all(torch.equal(w, o) for m in range(1, len(beam.names))
               for w, o in zip(lora_weights(beam.layers[beam.names[m]]), before[m]))
    assert float(beam.gates[0][3].detach()) == float(beam.gates[0][1].detach()) == pytest.approx((0.02 - 1.0) / 2)
    state = run.optimizer.state
    assert state[a]["exp_avg"][3].abs().sum() == 0 and state[a]["exp_avg"][0].abs().sum() > 0
    assert state[b]["exp_avg_sq"][:, 3].abs().sum() == 0
    assert all(state[g]["exp_avg"].abs().sum() == 0 for g in beam.gates)  # gates' moments reset
    assert beam.rounds == [{"step": 10, "keep_share": pytest.approx(beam.keep_share(10), abs=1e-4),
                            "refilled_ranks": 1}]


def test_beamlora_schedule_prunes_less_towards_the_end_and_stops():
    beam = BeamLoRA.__new__(BeamLoRA)
    beam.expand_until = 60
    shares = [beam.keep_share(t) for t in (0, 30, 59)]
    assert shares[0] == pytest.approx(0.95) and shares[1] == pytest.approx(0.975) and shares[2] < 1.0
    assert shares == sorted(shares)


def _light(tiny_base_dir, **overrides):
    config = TrainingConfig(method="light-peft", rank=8, target_modules=ALL, lora_dropout=0.0, **overrides)
    model = build_model(tiny_base_dir, config, torch.device("cpu"))
    light = LightPEFT(model, config, steps=50)
    randomize_lora(model, 3)
    return config, model, light


def test_light_peft_measures_importance_and_prunes_modules_then_ranks(tiny_base_dir):
    config, model, light = _light(tiny_base_dir)
    # Module importance is ||dW x|| / ||W x||: a module whose B is 100x larger must rank first.
    name = light.names[5]
    with torch.no_grad():
        lora_weights(light.layers[name])[1].mul_(100)
    light.start(light.estimation_steps - 1)  # the second half of estimation: collecting
    light.before_forward(torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0]]))  # the last two tokens are padding
    model.train()
    model(input_ids=IDS, labels=IDS).loss.backward()
    light.after_backward(light.estimation_steps - 1)
    assert all(light._module_count[n] == 6 for n in light.names)
    scores = {n: light._module_sum[n] / light._module_count[n] for n in light.names}
    assert max(scores, key=scores.get) == name
    plan = light.make_plan()
    assert plan.ranks[name] == list(range(8))  # its ranks' Taylor scores are 100x too
    assert 1 <= len(plan.ranks) <= 4  # ceil(25% of 14 modules); one that loses every rank goes
    kept_ranks = sum(len(r) for r in plan.ranks.values())
    assert kept_ranks <= 4 * 8 // 2 + 1  # half the kept modules' ranks, give or take a tie
    assert light.record_["kept_ranks"] == kept_ranks and light.record_["modules"] == 14


def test_light_peft_writes_the_pruned_adapter_padded_exactly(tiny_base_dir, tmp_path):
    config, model, light = _light(tiny_base_dir)
    layers = lora_layers(model)
    names = list(layers)
    plan = PrunePlan(ranks={names[0]: [1, 5], names[6]: [0, 2, 3], names[9]: [7]})  # q (layer 0), down (0), v (1)
    model = light.restructure(model, plan)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable) == light.trainable_parameters()
    assert light.trainable_parameters() == 2 * (256 + 256) + 3 * (512 + 256) + 1 * (256 + 128)
    randomize_lora(model, 4)
    with torch.no_grad():
        stage_two = model.eval()(input_ids=IDS).logits
    out = light.export(model, tmp_path / "adapter")
    tensors = load_file(str(out / "adapter_model.safetensors"))
    assert len(tensors) == 2 * 14 and all(t.shape[0] == 8 or t.shape[1] == 8 for t in tensors.values())
    torch.testing.assert_close(served_logits(tiny_base_dir, out), stage_two, atol=1e-4, rtol=1e-4)
    accepted_by_upload_validation(tiny_base_dir, out)


def test_light_peft_with_the_base_pruned_trains_on_a_smaller_ffn(tiny_base_dir, tmp_path):
    config = TrainingConfig(method="light-peft", rank=8, target_modules=ALL, max_steps=12, batch_size=8,
                            learning_rate=5e-3, light_prune_base=True, light_estimation_ratio=0.25,
                            checkpoint_every=100)
    result = run_training(tiny_base_dir, prepare(tiny_base_dir, reverse_task(30), None, config), config, tmp_path)
    record = result.metadata["training"]
    assert abs(record["kept_neurons"] - 2 * 512 * 2 / 3) <= 2  # a third of the neurons cut, globally
    assert record["zeroed_heads"] == 2 * 1  # a third of 4 heads per layer, rounded down, in 2 layers
    lora_total = 2 * (4 * (256 * 8 + 8 * 256) + 2 * (256 * 8 + 8 * 512) + (512 * 8 + 8 * 256))
    assert record["trainable_parameters"] <= 0.25 * lora_total
    tensors = load_file(str(result.adapter_dir / "adapter_model.safetensors"))
    down_a = [t for k, t in tensors.items() if "down_proj.lora_A" in k]
    assert all(t.shape == (8, 512) for t in down_a)  # written for the unpruned base
    accepted_by_upload_validation(tiny_base_dir, result.adapter_dir)
    served_logits(tiny_base_dir, result.adapter_dir)  # PEFT loads it on the unpruned base


@pytest.mark.parametrize("method, extra", [
    ("trans-peft", {}),
    ("beamlora", {"beam_interval": 2}),
    ("light-peft+trans-peft", {"light_estimation_ratio": 0.3, "light_prune_base": True}),
])
def test_killed_run_resumes_to_the_same_adapter(tiny_base_dir, tmp_path, method, extra):
    config = TrainingConfig(method=method, rank=4, max_steps=10, batch_size=4, checkpoint_every=2,
                            learning_rate=1e-3, target_modules=ALL, **extra)
    data = prepare(tiny_base_dir, reverse_task(24), None, config)
    straight = run_training(tiny_base_dir, data, config, tmp_path / "straight")
    cancel = threading.Event()

    def stop_after_seven(p):
        if p.step == 7:
            cancel.set()
    with pytest.raises(TrainingCancelled):
        run_training(tiny_base_dir, data, config, tmp_path / "resumed", on_progress=stop_after_seven, cancel=cancel)
    # The stop saves a checkpoint where the method allows one (step 7), else the periodic one stays (6).
    assert json.loads((tmp_path / "resumed" / "checkpoint" / "state.json").read_text())["step"] in (6, 7)
    resumed = run_training(tiny_base_dir, data, config, tmp_path / "resumed")
    a = load_file(str(straight.adapter_dir / "adapter_model.safetensors"))
    b = load_file(str(resumed.adapter_dir / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert straight.metadata["training"]["trainable_parameters"] == resumed.metadata["training"]["trainable_parameters"]


def test_trans_peft_composes_with_both_methods_and_anneals(tiny_base_dir):
    for method in ("beamlora+trans-peft", "light-peft+trans-peft"):
        config = TrainingConfig(method=method, rank=4, target_modules=ALL, weakening_schedule="anneal",
                                p_m=0.5, p_c=0.0)
        model = build_model(tiny_base_dir, config, torch.device("cpu"))
        from adapters.training.rank_method import make_rank_method

        run = _Run(model, make_rank_method(model, config, 20), config, 20)
        if method.startswith("light"):
            run.restructured(run.method.restructure(run.model), 2)  # the weakening moves to stage 2's model
        run.model.train()
        run.set_step(0)
        assert run.weakening.scale == 1.0
        run.model(input_ids=IDS, labels=IDS)
        early = run.weakening.stats.masked / run.weakening.stats.activations
        run.set_step(18)
        run.weakening.stats.masked = run.weakening.stats.activations = 0
        run.model(input_ids=IDS, labels=IDS)
        late = run.weakening.stats.masked / run.weakening.stats.activations
        assert 0.4 < early < 0.6 and late < 0.05


def test_methods_are_named_in_the_config_and_refused_otherwise():
    assert TrainingConfig(method="beamlora+trans-peft").rank_method == "beamlora"
    assert TrainingConfig(method="beamlora+trans-peft").weakens_ffn
    assert TrainingConfig(method="trans-peft").rank_method == "lora"
    assert not TrainingConfig(method="light-peft").weakens_ffn
    with pytest.raises(ValueError, match="method"):
        TrainingConfig(method="dora")
