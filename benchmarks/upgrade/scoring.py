"""Teacher-forced exact match: an example is right when the model's greedy choice at every
answer position is the answer's token (equal to greedy generation of the answer, and one
forward pass per batch instead of a decode loop, which matters on a 2-core CPU)."""

import json
from contextlib import contextmanager
from pathlib import Path

import torch

from benchmarks.upgrade.tasks import Example


def answer_flags(model, tokenizer, examples: list[Example], batch_size: int = 16) -> list[bool]:
    model.eval()
    device = next(model.parameters()).device
    flags = []
    for start in range(0, len(examples), batch_size):
        batch = examples[start:start + batch_size]
        prompts = [tokenizer(e.prompt, add_special_tokens=False)["input_ids"] for e in batch]
        fulls = [tokenizer(e.prompt + e.answer, add_special_tokens=False)["input_ids"] for e in batch]
        width = max(len(f) for f in fulls)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        ids = torch.tensor([f + [pad] * (width - len(f)) for f in fulls], device=device)  # [batch, width]
        mask = torch.tensor([[1] * len(f) + [0] * (width - len(f)) for f in fulls], device=device)
        with torch.no_grad():
            predicted = model(input_ids=ids, attention_mask=mask).logits.argmax(-1).cpu()  # [batch, width]
        for row, (p, f) in enumerate(zip(prompts, fulls)):
            answer = torch.tensor(f[len(p):])  # [answer_len]
            flags.append(bool(len(answer)) and torch.equal(predicted[row, len(p) - 1:len(f) - 1], answer))
    return flags


def accuracy(flags: list[bool]) -> float:
    return sum(flags) / len(flags) if flags else 0.0


def score(base_dir, adapter, examples: list[Example], tokenizer) -> list[bool]:
    """Right/wrong per example for the base at ``base_dir`` with ``adapter`` (a PEFT folder) or bare."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter)
    return answer_flags(model, tokenizer, examples)


class AdapterScorer:
    """Scores many adapters of one rank and target set on a few bases, each base loaded once
    (fp32, on the GPU when there is one) and the adapters' weights swapped in: loading a base
    per score would dominate a GPU run."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self._models: dict[str, torch.nn.Module] = {}

    def _model(self, base_dir: Path, adapter: Path):
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        key = str(base_dir)
        if key not in self._models:
            base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).to(self.device)
            self._models[key] = PeftModel.from_pretrained(base, adapter).to(self.device)
        return self._models[key]

    @contextmanager
    def swapped(self, base_dir: Path, adapter: Path | None, *, like: Path):
        """The model on ``base_dir`` with ``adapter``'s weights in place, or with adapters disabled
        when it is None; ``like``: any adapter of the run, to shape the wrapper."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        model = self._model(base_dir, adapter or like)
        if adapter is None:
            with model.disable_adapter():
                yield model
            return
        config, wrapper = json.loads((adapter / "adapter_config.json").read_text()), model.peft_config["default"]
        if (config["r"], config["lora_alpha"], sorted(config["target_modules"])) != (
                wrapper.r, wrapper.lora_alpha, sorted(wrapper.target_modules)):
            raise ValueError(f"{adapter}: rank, alpha or targets differ from the scorer's wrapper")
        weights = load_file(str(adapter / "adapter_model.safetensors"), device=str(self.device))
        result = set_peft_model_state_dict(model, weights)
        missing = [k for k in result.missing_keys if "lora_" in k]
        if result.unexpected_keys or missing:  # a stale adapter's weights must never stay in place
            raise ValueError(f"{adapter}: keys that do not match the scorer's wrapper: "
                             f"{(result.unexpected_keys + missing)[:3]}")
        yield model

    def score(self, base_dir: Path, adapter: Path | None, examples: list[Example], *, like: Path) -> list[bool]:
        with self.swapped(base_dir, adapter, like=like) as model:
            return answer_flags(model, self.tokenizer, examples)
