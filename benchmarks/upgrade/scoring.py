"""Teacher-forced exact match: an example is right when the model's greedy choice at every
answer position is the answer's token (equal to greedy generation of the answer, and one
forward pass per batch instead of a decode loop, which matters on a 2-core CPU)."""

import torch

from benchmarks.upgrade.tasks import Example


def answer_flags(model, tokenizer, examples: list[Example], batch_size: int = 16) -> list[bool]:
    model.eval()
    flags = []
    for start in range(0, len(examples), batch_size):
        batch = examples[start:start + batch_size]
        prompts = [tokenizer(e.prompt, add_special_tokens=False)["input_ids"] for e in batch]
        fulls = [tokenizer(e.prompt + e.answer, add_special_tokens=False)["input_ids"] for e in batch]
        width = max(len(f) for f in fulls)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        ids = torch.tensor([f + [pad] * (width - len(f)) for f in fulls])  # [batch, width], right-padded
        mask = torch.tensor([[1] * len(f) + [0] * (width - len(f)) for f in fulls])
        with torch.no_grad():
            predicted = model(input_ids=ids, attention_mask=mask).logits.argmax(-1)  # [batch, width]
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
