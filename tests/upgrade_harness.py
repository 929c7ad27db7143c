"""A gateway serving two versions of the tiny base: tiny@1 on the session's worker, tiny@2 (a
"continually trained" copy: heavy FFN change, dead neurons pruned) on a worker it starts itself;
adapters trained for real (LoRA and Trans-PEFT) or written by peft, with eval sets."""

import json
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from adapters.registry.database import make_engine, make_session_factory, upgrade_schema
from adapters.registry.registry import Registry
from adapters.training.config import TrainingConfig
from adapters.training.pipeline import prepare, run_training
from migration.base_versions.importer import import_base
from tests.gateway_harness import Gateway

# A memorisation task the tiny model learns in 60 steps; the answers are its eval set.
FACTS = [("Color of the sky:", " blue"), ("Opposite of hot:", " cold"), ("Capital of France:", " Paris"),
         ("Number after one:", " two"), ("Animal that barks:", " dog"), ("Day after Monday:", " Tuesday"),
         ("Color of grass:", " green"), ("Opposite of up:", " down")]
PROBES = ["The quick brown fox", "Once upon a time", "In the beginning", "My favourite food is", "The weather today",
          "A long time ago", "Dear customer,", "The answer is"]
EVAL_TOKENS = 8  # = migration_eval_max_tokens of the upgrade gateways
ACTIVE = ("queued", "running")
# Only the gain-kept check decides (no retention, flip or agreement bar): makes outcomes exact.
GAIN_KEPT_ONLY = {"min_retention": 0.0, "min_gain_kept": 0.5, "max_negative_flip_rate": 1.0,
                  "min_agreement_without_eval": 0.0, "min_gain": 0.05}
EVERYTHING_PASSES = {**GAIN_KEPT_ONLY, "min_gain_kept": 0.0}


def import_two_versions(database_url: str, data_dir: Path, v1: Path, v2: Path) -> None:
    engine = make_engine(database_url)
    upgrade_schema(engine)
    registry = Registry(make_session_factory(engine))
    import_base(registry, data_dir / "bases", name="tiny", source=v1)
    import_base(registry, data_dir / "bases", name="tiny", source=v2)
    engine.dispose()


def train_adapter(base_dir: Path, work_dir: Path, method: str) -> Path:
    data = "\n".join(json.dumps({"prompt": p, "completion": c}) for p, c in FACTS).encode()
    config = TrainingConfig(method=method, rank=8, max_steps=60, learning_rate=1e-2, batch_size=8,
                            held_out_fraction=0.0, lora_dropout=0.0, checkpoint_every=1000)
    return run_training(base_dir, prepare(base_dir, data, data, config), config, work_dir).adapter_dir


def facts_eval_set() -> bytes:
    return "".join(json.dumps({"prompt": p, "expected": c.strip()}) + "\n" for p, c in FACTS).encode()


def eval_set_from_outputs(outputs: dict[str, str]) -> bytes:
    """The adapter's own answers on the old base are what it must keep giving."""
    return "".join(json.dumps({"prompt": p, "expected": o}) + "\n" for p, o in outputs.items()).encode()


@dataclass
class AdminApi:
    url: str
    admin_key: str

    def client(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key or self.admin_key}"},
                            timeout=120)

    def tenant(self, name: str) -> str:
        with self.client() as c:
            resp = c.post("/admin/tenants", json={"name": name})
            resp.raise_for_status()
            return resp.json()["api_key"]

    def add(self, tenant: str, name: str, folder: Path, *, eval_set: bytes | None = None,
            scoring: str = "exact_match", trained_with: str = "unknown") -> dict:
        files = [("file", (n, (folder / n).read_bytes())) for n in ("adapter_config.json", "adapter_model.safetensors")]
        if eval_set is not None:
            files.append(("eval_set", ("eval.jsonl", eval_set)))
        form = {"name": name, "base_model": "tiny@1", "trained_with": trained_with, "eval_scoring": scoring}
        with self.client() as c:
            resp = c.post(f"/admin/tenants/{tenant}/adapters", data=form, files=files)
        assert resp.status_code == 201, resp.text
        return resp.json()

    def outputs(self, key: str, model: str, prompts: list[str]) -> dict[str, str]:
        with self.client(key) as c:
            return {p: c.post("/v1/completions", json={"model": model, "prompt": p, "max_tokens": EVAL_TOKENS,
                                                       "temperature": 0}).json()["choices"][0]["text"]
                    for p in prompts}

    def start_job(self, body: dict) -> dict:
        with self.client() as c:
            resp = c.post("/admin/migrations", json=body)
        assert resp.status_code == 201, resp.text
        return resp.json()

    def job(self, job_id: str) -> dict:
        with self.client() as c:
            return c.get(f"/admin/migrations/{job_id}").json()

    def wait(self, job_id: str, timeout_s: float = 300) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["status"] not in ACTIVE:
                return job
            time.sleep(0.2)
        raise TimeoutError(f"migration {job_id} still {job['status']} after {timeout_s}s")

    def workers(self) -> set[str]:
        with self.client() as c:
            return {w["base_version"] for w in c.get("/admin/workers").json()}


def admin_api(gateway: Gateway) -> AdminApi:
    return AdminApi(gateway.url, gateway.settings.admin_key)
