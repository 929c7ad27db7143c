"""The OpenAI fine-tuning API on the real gateway: files, jobs, events, cancel, queueing, and
the trained adapter served at once; bad input refused up front."""

import json
import shutil
import time

import httpx
import openai
import pytest

from tests.polling import eventually
from tests.test_trans_peft import reverse_task

FAST = {"method": "trans-peft", "p_m": 0.1, "p_c": 0.1, "rank": 8, "max_steps": 12, "learning_rate": 3e-3,
        "batch_size": 4}


@pytest.fixture(scope="module")
def client(gateway):
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.tenant_key("ft-co"))


def wait_for(client, job_id, statuses, timeout_s=180):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        time.sleep(0.5)
    raise TimeoutError(f"job {job_id} stuck in {job.status}")


def test_fine_tuning_job_ends_with_a_servable_adapter(gateway, client):
    training = client.files.create(file=("train.jsonl", reverse_task(40)), purpose="fine-tune")
    assert training.purpose == "fine-tune" and training.bytes > 0
    job = client.fine_tuning.jobs.create(model="tiny", training_file=training.id, suffix="reverser",
                                         hyperparameters=FAST)
    assert job.status in ("queued", "running") and job.hyperparameters.method == "trans-peft"
    done = wait_for(client, job.id, ("succeeded", "failed", "cancelled"))
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model == "ft:tiny:ft-co:reverser" and done.trained_tokens > 0

    answer = client.completions.create(model=done.fine_tuned_model, prompt="Reverse: apple river stone\nAnswer:",
                                       max_tokens=6, temperature=0)
    assert answer.model == done.fine_tuned_model
    events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
    steps = [e.data["step"] for e in events if e.data and "step" in e.data]
    assert 12 in steps and all("train_loss" in e.data for e in events if e.data and "step" in e.data)
    assert any("New fine-tuned model created" in e.message for e in events)
    assert job.id in [j.id for j in client.fine_tuning.jobs.list().data]
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data  # the official client's own method
    assert [(c.fine_tuned_model_checkpoint, c.step_number) for c in checkpoints] == [(done.fine_tuned_model, 12)]
    assert checkpoints[0].metrics.train_loss is not None
    with gateway.client(gateway.tenant_key("ft-stranger")) as c:  # another tenant's job is unknown
        assert c.get(f"/v1/fine_tuning/jobs/{job.id}/checkpoints").status_code == 404

    with gateway.client(client.api_key) as c:
        adapter = c.get(f"/v1/adapters/{done.fine_tuned_model}").json()["versions"][0]
    assert adapter["status"] == "ready" and adapter["trained_with"] == "trans-peft"
    assert adapter["screening"]["stage"] == "fine-tuning" and "trigger_scan" in adapter["screening"]
    assert adapter["training_metadata"]["fine_tuning_job"] == job.id
    assert adapter["eval_items"] == 4  # the 10% held-out split, kept for base upgrades
    work_dir = gateway.app.state.services.fine_tuning.work_root / job.id
    deadline = time.monotonic() + 30  # checkpoints and optimizer state go once the job has ended
    while work_dir.exists():
        assert time.monotonic() < deadline, f"{work_dir} was not removed"
        time.sleep(0.1)


@pytest.mark.parametrize("method, extra", [
    ("beamlora+trans-peft", {"beam_interval": 3}),
    ("light-peft", {"light_prune_base": True, "light_estimation_ratio": 0.25,
                    "target_modules": ["q_proj", "v_proj", "gate_proj", "up_proj", "down_proj"]}),
])
def test_beamlora_and_light_peft_jobs_end_with_adapters_the_worker_serves(gateway, client, method, extra):
    training = client.files.create(file=("train.jsonl", reverse_task(40)), purpose="fine-tune")
    suffix = method.split("+")[0]
    job = client.fine_tuning.jobs.create(model="tiny", training_file=training.id, suffix=suffix,
                                         hyperparameters={**FAST, "method": method, **extra})
    done = wait_for(client, job.id, ("succeeded", "failed", "cancelled"))
    assert done.status == "succeeded", done.error
    answer = client.completions.create(model=done.fine_tuned_model, prompt="Reverse: apple river stone\nAnswer:",
                                       max_tokens=6, temperature=0)
    assert answer.model == done.fine_tuned_model and answer.usage.completion_tokens > 0
    with gateway.client(client.api_key) as c:
        adapter = c.get(f"/v1/adapters/{done.fine_tuned_model}").json()["versions"][0]
    assert adapter["status"] == "ready" and adapter["trained_with"] == method and adapter["rank"] == 8
    record = adapter["training_metadata"]["training"]
    if method.startswith("beamlora"):
        assert record["rounds"] and record["interval"] == 3
    else:
        assert record["kept_modules"] < record["modules"] and record["kept_neurons"] is not None


def _weights(services, tenant_name: str, adapter: str) -> dict:
    from safetensors.torch import load

    tenant = services.registry.get_tenant(tenant_name)
    row = services.registry.resolve_adapter(tenant.id, adapter, None)
    with services.fine_tuning.blobs.open(row.weights_sha256) as f:
        return load(f.read())


def test_a_job_continues_an_adapter_from_its_weights(gateway, client):
    """``model`` may name one of the tenant's adapters (as OpenAI's ``ft:`` models): the job starts
    from its weights (with a vanishing learning rate the result is that adapter), its rank and
    targets; the starting weights survive the adapter's deletion while the job needs them."""
    import torch

    services = gateway.app.state.services
    training = client.files.create(file=("train.jsonl", reverse_task(24)), purpose="fine-tune")
    first = client.fine_tuning.jobs.create(model="tiny", training_file=training.id, suffix="start",
                                           hyperparameters={**FAST, "method": "lora", "rank": 4})
    first = wait_for(client, first.id, ("succeeded", "failed", "cancelled"))
    assert first.status == "succeeded", first.error
    job = client.fine_tuning.jobs.create(model=first.fine_tuned_model, training_file=training.id, suffix="more",
                                         hyperparameters={"method": "lora", "max_steps": 1, "learning_rate": 1e-12})
    assert job.hyperparameters.rank == 4 and job.model == first.fine_tuned_model
    start_sha = services.fine_tuning.repo.get_job(job.id).init_weights_sha256
    before = _weights(services, "ft-co", first.fine_tuned_model)

    with gateway.client(client.api_key) as c:  # delete the starting adapter while the job needs it
        assert c.delete(f"/v1/adapters/{first.fine_tuned_model}").status_code == 200
    assert services.fine_tuning.repo.get_job(job.id).status.value in ("queued", "running")
    assert services.registration.lifecycle.release([start_sha]) == []  # the job's reference keeps it
    assert services.fine_tuning.blobs.exists(start_sha)

    done = wait_for(client, job.id, ("succeeded", "failed", "cancelled"))
    assert done.status == "succeeded", done.error
    after = _weights(services, "ft-co", done.fine_tuned_model)
    assert before.keys() == after.keys() and all(torch.allclose(before[k], after[k], atol=1e-6) for k in before)
    with gateway.client(client.api_key) as c:
        adapter = c.get(f"/v1/adapters/{done.fine_tuned_model}").json()["versions"][0]
    assert adapter["status"] == "ready" and adapter["training_metadata"]["continued_from_adapter"] is True
    # The ended job no longer holds the blob: only the new adapter can (its weights may be bit-identical).
    new_row = services.registry.resolve_adapter(services.registry.get_tenant("ft-co").id, done.fine_tuned_model, None)
    references = services.registration.lifecycle.references
    assert references.referenced(start_sha) == (new_row.weights_sha256 == start_sha)


def test_continuing_an_adapter_refuses_another_shape_or_tenant(gateway, client):
    training = client.files.create(file=("t.jsonl", reverse_task(10)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="tiny", training_file=training.id, suffix="shape",
                                         hyperparameters={**FAST, "method": "lora", "rank": 4})
    done = wait_for(client, job.id, ("succeeded", "failed", "cancelled"))
    assert done.status == "succeeded", done.error
    with gateway.client(client.api_key) as c:
        resp = c.post("/v1/fine_tuning/jobs", json={"model": done.fine_tuned_model, "training_file": training.id,
                                                     "hyperparameters": {"rank": 8}})
        assert resp.status_code == 400 and "rank 4" in resp.json()["error"]["message"], resp.text
        resp = c.post("/v1/fine_tuning/jobs", json={"model": done.fine_tuned_model, "training_file": training.id,
                                                     "hyperparameters": {"target_modules": ["q_proj"]}})
        assert resp.status_code == 400 and "target_modules" in resp.json()["error"]["message"], resp.text
    other = gateway.tenant_key("ft-other")
    files = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=other).files
    theirs = files.create(file=("t.jsonl", reverse_task(10)), purpose="fine-tune")
    with gateway.client(other) as c:  # another tenant's adapter is not a model it can continue
        resp = c.post("/v1/fine_tuning/jobs", json={"model": done.fine_tuned_model, "training_file": theirs.id})
    assert resp.status_code == 400 and "not a base model or one of your ready adapters" in resp.text, resp.text


@pytest.mark.parametrize("body,status,needle", [
    ({"hyperparameters": {"learning_rat": 0.1}}, 400, "unknown hyperparameter 'learning_rat'"),
    ({"hyperparameters": {"method": "dora"}}, 400, "hyperparameters.method"),
    ({"hyperparameters": {"p_m": 1.5}}, 400, "hyperparameters.p_m"),
    ({"hyperparameters": {"rank": 64}}, 400, "largest rank"),
    ({"model": "gpt-4o"}, 400, "not a base model"),
    ({"training_file": "file-nope"}, 404, "No such file"),
    ({"suffix": "Bad Suffix!"}, 400, "suffix"),
])
def test_bad_job_requests_are_refused(gateway, client, body, status, needle):
    training = client.files.create(file=("t.jsonl", reverse_task(10)), purpose="fine-tune")
    request = {"model": "tiny", "training_file": training.id, **body}
    with gateway.client(client.api_key) as c:
        resp = c.post("/v1/fine_tuning/jobs", json=request)
    assert resp.status_code == status and needle in resp.json()["error"]["message"], resp.text


def test_bad_training_files_are_refused_naming_the_line(gateway, client):
    with gateway.client(client.api_key) as c:
        bad = c.post("/v1/files", data={"purpose": "fine-tune"},
                     files={"file": ("t.jsonl", b'{"prompt": "a", "completion": "b"}\n{"prompt": "a", "completion": ""}\n')})
        assert bad.status_code == 400 and "line 2" in bad.json()["error"]["message"]
        wrong_purpose = c.post("/v1/files", data={"purpose": "assistants"}, files={"file": ("t.jsonl", b"{}")})
        assert wrong_purpose.status_code == 400
    long_line = b'{"prompt": "' + b"word " * 700 + b'", "completion": "x"}\n'
    too_long = client.files.create(file=("long.jsonl", long_line * 6), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError, match="max_seq_len"):
        client.fine_tuning.jobs.create(model="tiny", training_file=too_long.id)
    few = client.files.create(file=("few.jsonl", reverse_task(2)), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError, match="at least"):
        client.fine_tuning.jobs.create(model="tiny", training_file=few.id)
    other = openai.OpenAI(base_url=client.base_url, api_key=gateway.tenant_key("ft-other"))
    with pytest.raises(openai.NotFoundError):
        other.fine_tuning.jobs.create(model="tiny", training_file=few.id)


def test_queue_per_tenant_cancel_and_a_job_failing_midway(gateway, client):
    long = client.files.create(file=("long.jsonl", reverse_task(40)), purpose="fine-tune")
    doomed = client.files.create(file=("doomed.jsonl", reverse_task(20, seed=3)), purpose="fine-tune")
    first = client.fine_tuning.jobs.create(model="tiny", training_file=long.id, suffix="long",
                                           hyperparameters={**FAST, "max_steps": 5000})
    second = client.fine_tuning.jobs.create(model="tiny", training_file=doomed.id, suffix="doomed",
                                            hyperparameters=FAST)
    wait_for(client, first.id, ("running",))
    time.sleep(1.5)
    assert client.fine_tuning.jobs.retrieve(second.id).status == "queued"  # one job per tenant at a time
    client.files.delete(doomed.id)  # its data vanishes while it waits

    client.fine_tuning.jobs.cancel(first.id)
    cancelled = wait_for(client, first.id, ("cancelled", "succeeded", "failed"))
    failed = wait_for(client, second.id, ("succeeded", "failed", "cancelled"))
    assert cancelled.status == "cancelled" and cancelled.fine_tuned_model is None
    assert failed.status == "failed" and "No such file" in failed.error.message
    assert any(e.level == "error" for e in client.fine_tuning.jobs.list_events(second.id).data)
    with gateway.client(client.api_key) as c:
        names = [a["name"] for a in c.get("/v1/adapters").json()["data"]]
    assert "ft:tiny:ft-co:long" not in names and "ft:tiny:ft-co:doomed" not in names
    assert httpx.get(f"{gateway.url}/ready").status_code == 200


def test_pause_and_resume_continue_from_the_checkpoint_to_the_same_adapter(gateway, client):
    """Paused mid-run, a job stops after saving a checkpoint; resumed, it finishes with exactly the
    adapter an uninterrupted run makes (same seed and data; that one asked with the top-level
    hyperparameters, this one with the method object)."""
    training = client.files.create(file=("train.jsonl", reverse_task(40)), purpose="fine-tune")
    hyper = {"method": "lora", "rank": 4, "max_steps": 200, "batch_size": 4, "learning_rate": 1e-3,
             "checkpoint_every": 1000}  # the pause writes the only checkpoint
    straight = wait_for(client, client.fine_tuning.jobs.create(
        model="tiny", training_file=training.id, suffix="straight", hyperparameters=hyper, seed=3).id,
        ("succeeded", "failed"))
    assert straight.status == "succeeded", straight.error

    # As current clients send it: OpenAI's method object, our extensions in its hyperparameters.
    job = client.fine_tuning.jobs.create(model="tiny", training_file=training.id, suffix="paused", seed=3,
                                         method={"type": "supervised", "supervised": {"hyperparameters": hyper}})
    assert job.hyperparameters.model_extra["max_steps"] == 200
    deadline = time.monotonic() + 120
    while not any(e.data and e.data.get("step", 0) >= 5 for e in client.fine_tuning.jobs.list_events(job.id).data):
        assert time.monotonic() < deadline, "training made no progress"
        time.sleep(0.2)
    assert client.fine_tuning.jobs.pause(job.id).status in ("running", "paused")
    paused = wait_for(client, job.id, ("paused", "succeeded", "failed"))
    assert paused.status == "paused", paused
    services = gateway.app.state.services
    work = services.fine_tuning.work_root / job.id
    step = json.loads((work / "checkpoint" / "state.json").read_text())["step"]
    assert 5 <= step < 200
    stored = services.fine_tuning.repo.get_job(job.id)
    assert stored.checkpoint_step == step and services.fine_tuning.blobs.exists(stored.checkpoint_sha256)
    shutil.rmtree(work)  # resumed as if on another machine: only the blob store has the checkpoint
    time.sleep(1.5)  # a paused job is not picked up again by the runner
    assert client.fine_tuning.jobs.retrieve(job.id).status == "paused"
    with pytest.raises(openai.ConflictError):
        client.fine_tuning.jobs.pause(straight.id)  # finished: nothing to pause

    assert client.fine_tuning.jobs.resume(job.id).status in ("queued", "running")
    done = wait_for(client, job.id, ("succeeded", "failed"))
    assert done.status == "succeeded", done.error
    events = client.fine_tuning.jobs.list_events(job.id, limit=1000).data[::-1]
    messages = [e.message for e in events]
    assert any("paused at its last checkpoint" in m for m in messages) and any("resumed" in m for m in messages)
    resumed_at = messages.index(f"Resuming from the checkpoint at step {step}")
    assert all(e.data["step"] > step for e in events[resumed_at:] if e.data and "step" in e.data)
    # Released after the job ended: the runner releases it just after the status turns terminal.
    eventually(lambda: not services.fine_tuning.blobs.exists(stored.checkpoint_sha256), 30,
               what="the ended job's checkpoint blob released")
    with gateway.client(client.api_key) as c:
        sha = {name: c.get(f"/v1/adapters/{name}").json()["versions"][0]["sha256"]
               for name in (straight.fine_tuned_model, done.fine_tuned_model)}
    assert sha[straight.fine_tuned_model] == sha[done.fine_tuned_model]
    with pytest.raises(openai.ConflictError):
        client.fine_tuning.jobs.resume(job.id)  # not paused any more

    # Paused, then cancelled: its checkpoint and this machine's work folder go with it.
    doomed = client.fine_tuning.jobs.create(model="tiny", training_file=training.id, suffix="doomed", seed=3,
                                            hyperparameters=hyper)
    deadline = time.monotonic() + 120
    while not any(e.data and e.data.get("step", 0) >= 5 for e in client.fine_tuning.jobs.list_events(doomed.id).data):
        assert time.monotonic() < deadline, "training made no progress"
        time.sleep(0.2)
    client.fine_tuning.jobs.pause(doomed.id)
    assert wait_for(client, doomed.id, ("paused", "succeeded", "failed")).status == "paused"
    kept = services.fine_tuning.repo.get_job(doomed.id).checkpoint_sha256
    assert services.fine_tuning.blobs.exists(kept) and (services.fine_tuning.work_root / doomed.id).exists()
    assert client.fine_tuning.jobs.cancel(doomed.id).status == "cancelled"
    assert not services.fine_tuning.blobs.exists(kept) and not (services.fine_tuning.work_root / doomed.id).exists()
