"""``peftserve adapter``: add, upload and list a tenant's adapters."""

from pathlib import Path
from typing import Annotated

import typer

from server.cli.command_output import Col, JsonOpt, UrlOpt, WideOpt, admin_call, emit, emit_table, fail, make_table
from server.settings import Settings


adapter_app = typer.Typer(help="Adapters.", no_args_is_help=True)


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
    trained_with: Annotated[str, typer.Option(help="lora | trans-peft | beamlora | light-peft | beamlora+trans-peft | light-peft+trans-peft | unknown")] = "unknown",
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
                 as_json: JsonOpt = False, wide: WideOpt = False) -> None:
    """List a tenant's adapters, every version."""
    rows = admin_call(url, as_json, "GET", f"/admin/tenants/{tenant}/adapters")
    shown = [{**r, "screening": _verdict_word(r), "reason": r.get("status_reason") or ""} for r in rows]
    columns = [Col("name"), Col("version"), Col("status"), Col("base_version", drop=2), Col("rank", drop=3),
               Col("screening", drop=1), Col("base_model", drop=4), Col("reason", wrap=True)]
    emit_table(as_json, {"adapters": rows}, make_table(f"adapters of {tenant}", shown, columns, wide=wide), wide)


def _verdict_word(adapter: dict) -> str:
    verdict = (adapter.get("screening") or {}).get("verdict") or {}
    return "flagged" if verdict.get("flagged") else ("clear" if verdict else "")
