"""``peftserve key``: a tenant's API keys (create, list, revoke)."""

from typing import Annotated

import typer

from server.cli.command_output import JsonOpt, UrlOpt, admin_call, emit, make_table


key_app = typer.Typer(help="API keys.", no_args_is_help=True)


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
