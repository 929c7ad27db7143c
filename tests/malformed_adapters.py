"""Broken variants of a real PEFT adapter, one per validation rule (table-driven tests)."""

import json
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save

@dataclass
class Case:
    id: str
    code: str
    status: int
    config: bytes
    weights: bytes
    weights_name: str = "adapter_model.safetensors"


def _config(folder: Path, **changes) -> bytes:
    data = json.loads((folder / "adapter_config.json").read_text())
    data.update(changes)
    return json.dumps(data).encode()


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "adapter_model.safetensors"))


def _with_tensors(tensors: dict[str, torch.Tensor]) -> bytes:
    return save({k: v.contiguous() for k, v in tensors.items()})


def _raw_safetensors(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def cases(folder: Path) -> list[Case]:
    """``folder``: a valid rank-8 adapter on q/k/v/o of the tiny test base."""
    good_config = (folder / "adapter_config.json").read_bytes()
    good_weights = (folder / "adapter_model.safetensors").read_bytes()
    t = _tensors(folder)
    first_a = next(k for k in t if "layers.0.self_attn.q_proj.lora_A" in k)

    renamed = dict(t)
    renamed[first_a.replace("layers.0", "layers.7")] = renamed.pop(first_a)  # the base has 2 layers
    wrong_shape = dict(t)
    wrong_shape[first_a] = torch.zeros(8, 100)
    missing = {k: v for k, v in t.items() if "layers.1.self_attn.v_proj" not in k}
    nan = dict(t)
    nan[first_a] = t[first_a].clone()
    nan[first_a][0, 0] = float("nan")
    inf = dict(t)
    inf[first_a] = t[first_a].clone()
    inf[first_a][0, 0] = float("inf")
    extra = dict(t)
    extra["base_model.model.model.layers.0.mlp.gate_proj.lora_A.weight"] = torch.zeros(8, 256)
    other_arch = {k.replace("model.layers", "transformer.h"): v for k, v in t.items()}
    ints = dict(t)
    ints[first_a] = torch.zeros(8, 256, dtype=torch.int32)
    embedding = dict(t)
    embedding["base_model.model.model.embed_tokens.lora_embedding_A"] = torch.zeros(8, 49152)

    header_past_end = _raw_safetensors({"x": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}}, b"\0" * 16)
    overlap = _raw_safetensors({
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": {"dtype": "F32", "shape": [2],
                                                                           "data_offsets": [0, 8]},
        "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": {"dtype": "F32", "shape": [2],
                                                                           "data_offsets": [4, 12]}}, b"\0" * 12)
    huge_header = struct.pack("<Q", 1 << 40) + b"{}"
    pickled = pickle.dumps({"weights": [1, 2, 3]})

    return [
        Case("config_not_json", "invalid_adapter_config", 422, b"{not json", good_weights),
        Case("config_not_object", "invalid_adapter_config", 422, b"[1, 2]", good_weights),
        Case("config_not_lora", "unsupported_adapter_type", 422, _config(folder, peft_type="IA3"), good_weights),
        Case("config_dora", "unsupported_adapter_feature", 422, _config(folder, use_dora=True), good_weights),
        Case("config_modules_to_save", "unsupported_adapter_feature", 422,
             _config(folder, modules_to_save=["lm_head"]), good_weights),
        Case("config_bias_all", "unsupported_adapter_feature", 422, _config(folder, bias="all"), good_weights),
        Case("config_auto_mapping_code", "unsupported_adapter_feature", 422,
             _config(folder, auto_mapping={"base_model_class": "os.system", "parent_library": "os"}), good_weights),
        Case("config_rank_too_large", "rank_too_large", 422, _config(folder, r=64), good_weights),
        Case("config_rank_not_int", "invalid_adapter_config", 422, _config(folder, r="eight"), good_weights),
        Case("config_target_regex", "invalid_adapter_config", 422, _config(folder, target_modules=".*proj"),
             good_weights),
        Case("config_unknown_target_module", "unknown_target_module", 422,
             _config(folder, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "frobnicate_proj"]),
             good_weights),
        Case("weights_pickle_renamed", "invalid_safetensors", 422, good_config, pickled),
        Case("weights_pickle_bin", "pickle_not_allowed", 422, good_config, pickled, "adapter_model.bin"),
        Case("weights_header_past_end", "invalid_offsets", 422, good_config, header_past_end),
        Case("weights_huge_header_length", "invalid_safetensors", 422, good_config, huge_header),
        Case("weights_overlapping_tensors", "invalid_offsets", 422, good_config, overlap),
        Case("weights_empty", "invalid_safetensors", 422, good_config, b""),
        Case("weights_integer_dtype", "invalid_dtype", 422, good_config, _with_tensors(ints)),
        Case("weights_module_not_in_base", "unknown_module", 422, good_config, _with_tensors(renamed)),
        Case("weights_other_architecture", "unknown_module", 422, good_config, _with_tensors(other_arch)),
        Case("weights_wrong_shape", "shape_mismatch", 422, good_config, _with_tensors(wrong_shape)),
        Case("weights_missing_for_target", "missing_weights", 422, good_config, _with_tensors(missing)),
        Case("weights_without_target", "tensor_without_target", 422, good_config, _with_tensors(extra)),
        Case("weights_embedding_lora", "unexpected_tensor", 422, good_config, _with_tensors(embedding)),
        Case("weights_nan", "non_finite_weights", 422, good_config, _with_tensors(nan)),
        Case("weights_inf", "non_finite_weights", 422, good_config, _with_tensors(inf)),
    ]
