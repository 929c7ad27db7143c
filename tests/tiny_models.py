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


def make_tiny_llama(out_dir: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """hidden 256, 2 layers, 4 heads (head_dim 64), SmolLM2 vocab; bf16 safetensors."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=64, vocab_size=49152, max_position_embeddings=2048,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2,
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out_dir, safe_serialization=True)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out_dir)
    return out_dir


def make_lora(base_dir: Path, out_dir: Path, *, seed: int, rank: int = 8, targets: str = "attn") -> Path:
    """A PEFT LoRA written by ``peft`` itself, with random non-zero B so it changes outputs."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(
        r=rank, lora_alpha=2 * rank, target_modules=TARGET_SETS[targets], init_lora_weights=False,
        lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
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
