"""The stand-in for a vendor's base update: v1 continually trained on Python's own standard
library source (a real corpus every Python installation carries, offline). It is a fair
stand-in because vendor updates are exactly this: more next-token training on new text,
same architecture; here on code, so held-out loss on unseen stdlib files says whether the
update made a better model. ``params="ffn"`` trains only the FFN sub-layers (the paper's
premise: continual training moves the FFN most); ``"all"`` trains every weight. The learning
rate warms up over the first 10% of steps and then decays (cosine), as continual pre-training
runs do; without the warm-up a 1e-3 step on a trained model damages it at once."""

import hashlib
import json
import random
import shutil
import sysconfig
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

HELD_OUT_SEQ_LEN = 256
HELD_OUT_BATCH = 4


@dataclass(frozen=True)
class UpdateConfig:
    params: str = "ffn"  # "ffn" or "all"
    learning_rate: float = 3e-4
    steps: int = 45
    batch_size: int = 4
    seq_len: int = 128  # Adam's step size does not depend on tokens per step: short chunks move weights as far, cheaper
    warmup_ratio: float = 0.1
    seed: int = 0

    @classmethod
    def parse(cls, spec: str) -> "UpdateConfig":
        """``params:learning_rate:steps``, e.g. ``ffn:1e-3:45``."""
        params, lr, steps = spec.split(":")
        if params not in ("ffn", "all"):
            raise ValueError(f"update {spec!r}: params must be ffn or all")
        return cls(params=params, learning_rate=float(lr), steps=int(steps))

    @property
    def label(self) -> str:
        return f"{self.params} lr {self.learning_rate:g} x{self.steps}"

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def stdlib_chunks(tokenizer, seq_len: int) -> tuple[list[list[int]], list[list[int]]]:
    """(train, held-out) token chunks; a file goes wholly to one side (1 in 10 held out)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    train, held = [], []
    for path in sorted(root.glob("*.py")):
        ids = tokenizer(path.read_text(errors="ignore"), add_special_tokens=False)["input_ids"]
        side = held if int(hashlib.sha256(path.name.encode()).hexdigest(), 16) % 10 == 0 else train
        side.extend(ids[i:i + seq_len] for i in range(0, len(ids) - seq_len, seq_len))
    return train, held


def mean_loss(model, chunks: list[list[int]], batch_size: int) -> float:
    model.eval()
    losses = []
    device = next(model.parameters()).device
    with torch.no_grad():
        for i in range(0, len(chunks), batch_size):
            ids = torch.tensor(chunks[i:i + batch_size], device=device)  # [batch, seq_len]
            losses.append(model(input_ids=ids, labels=ids).loss.item())
    return sum(losses) / len(losses)


def updated_base(v1_dir: Path, cache: Path, config: UpdateConfig, log=print) -> tuple[Path, dict]:
    """The v2 folder for ``config`` (trained once, then cached) and what the update did."""
    out = cache / f"v2-{config.params}-{config.key()}"
    info_path = out / "update.json"
    if info_path.is_file():
        return out, json.loads(info_path.read_text())
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_cosine_schedule_with_warmup

    torch.manual_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(v1_dir)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = AutoModelForCausalLM.from_pretrained(v1_dir, dtype=torch.float32).to(device)
    train, _ = stdlib_chunks(tokenizer, config.seq_len)
    held = stdlib_chunks(tokenizer, HELD_OUT_SEQ_LEN)[1][:48]  # the same held-out text for every config
    for name, p in model.named_parameters():
        p.requires_grad = config.params == "all" or ".mlp." in name
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=0.0)
    schedule = get_cosine_schedule_with_warmup(optimizer, max(1, int(config.warmup_ratio * config.steps)),
                                               config.steps)
    before = mean_loss(model, held, HELD_OUT_BATCH)
    rng = random.Random(config.seed)
    started = time.perf_counter()
    model.train()
    for step in range(config.steps):
        ids = torch.tensor(rng.sample(train, config.batch_size), device=device)  # [batch, seq_len]
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        if step % 10 == 0:
            log(f"  update step {step}/{config.steps}: loss {loss.item():.3f}")
    seconds = time.perf_counter() - started
    after = mean_loss(model, held, HELD_OUT_BATCH)
    staging = cache / f".staging-{config.key()}"
    shutil.rmtree(staging, ignore_errors=True)
    model.to("cpu", torch.bfloat16).save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    info = {"config": asdict(config), "held_out_loss_before": before, "held_out_loss_after": after,
            "train_chunks": len(train), "held_out_chunks": len(held), "seconds": seconds,
            "seconds_per_step": seconds / config.steps}
    (staging / "update.json").write_text(json.dumps(info, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return out, info
