"""Tiny random Llama base models and real PEFT LoRA adapters, written at test time."""

import json
from pathlib import Path

import torch

from migration.base_versions.gguf_import import demo_gguf_path

TARGET_SETS = {
    "attn": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qv": ["q_proj", "v_proj"],
    "all": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}


def save_demo_tokenizer(out_dir: Path) -> None:
    """The real SmolLM2 tokenizer and chat template, taken from the packaged GGUF (offline)."""
    from transformers import AutoTokenizer

    gguf = demo_gguf_path()
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(out_dir)


# Layer 1 has FFN neurons whose output weights are zero: they are computed but add nothing, so a
# "v2" can prune them without changing the bare model, while a LoRA reading them loses its effect
# (the silent no-op case of a base-model migration).
DEAD_LAYER, DEAD_NEURONS = 1, slice(0, 64)


def make_tiny_llama(out_dir: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """hidden 256, 2 layers, 4 heads (head_dim 64), SmolLM2 vocab; bf16 safetensors; layer 1
    has 64 dead FFN neurons (zero columns of down_proj)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=64, vocab_size=49152, max_position_embeddings=2048,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2,
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    with torch.no_grad():
        model.model.layers[DEAD_LAYER].mlp.down_proj.weight[:, DEAD_NEURONS] = 0
    model.save_pretrained(out_dir, safe_serialization=True)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out_dir)
    return out_dir


def make_lora(base_dir: Path, out_dir: Path, *, seed: int, rank: int = 8, targets: str = "attn",
              rslora: bool = False) -> Path:
    """A PEFT LoRA written by ``peft`` itself, with random non-zero B so it changes outputs."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(
        r=rank, lora_alpha=2 * rank, target_modules=TARGET_SETS[targets], init_lora_weights=False,
        lora_dropout=0.0, bias="none", task_type="CAUSAL_LM", use_rslora=rslora,
    )
    peft_model = get_peft_model(model, config)
    with torch.no_grad():  # strong enough that greedy output visibly changes on a random model
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    peft_model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def adapter_files(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in ("adapter_config.json", "adapter_model.safetensors")}


def read_config(folder: Path) -> dict:
    return json.loads((folder / "adapter_config.json").read_text())


def continual_update(base_dir: Path, out_dir: Path, *, ffn_noise: float, seed: int = 0) -> Path:
    """A stand-in "v2" of the base: relative noise of size ``ffn_noise`` on every FFN weight (the
    sub-layer the Trans-PEFT paper finds moves most in continual training), and the dead FFN
    neurons of layer 1 pruned (their up/gate rows zeroed: the bare model does not notice)."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(base_dir, out_dir)
    weights = load_file(str(base_dir / "model.safetensors"))
    gen = torch.Generator().manual_seed(seed)
    for name, w in weights.items():
        if ".mlp." in name and ffn_noise:
            noise = torch.randn(w.shape, generator=gen)
            weights[name] = (w.float() + ffn_noise * w.float().norm() / noise.norm() * noise).to(w.dtype)
    for proj in ("up_proj", "gate_proj"):
        weights[f"model.layers.{DEAD_LAYER}.mlp.{proj}.weight"][DEAD_NEURONS, :] = 0
    # Noise must not revive the dead neurons' output weights, or the bare model would change there.
    weights[f"model.layers.{DEAD_LAYER}.mlp.down_proj.weight"][:, DEAD_NEURONS] = 0
    save_file(weights, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    return out_dir


def make_dead_neuron_lora(base_dir: Path, out_dir: Path, *, seed: int, rank: int = 8) -> Path:
    """A LoRA on down_proj that reads only layer 1's dead neurons: it changes the output of the base
    it was made for, and does exactly nothing on a version that pruned those neurons."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["down_proj"], init_lora_weights=False,
                        lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for layer, block in enumerate(peft_model.base_model.model.model.layers):
            lora_a = block.mlp.down_proj.lora_A["default"].weight  # [rank, intermediate]
            lora_b = block.mlp.down_proj.lora_B["default"].weight  # [hidden, rank]
            keep = torch.zeros_like(lora_a)
            keep[:, DEAD_NEURONS] = 1
            lora_a.mul_(keep)
            if layer == DEAD_LAYER:
                lora_b.normal_(0, 2.0)
            else:
                lora_b.zero_()
    peft_model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir
