"""``peftserve tenant``: create, list, disable and enable tenants."""

import typer

from server.cli.command_output import JsonOpt, UrlOpt, admin_call, emit, make_table


tenant_app = typer.Typer(help="Tenants.", no_args_is_help=True)


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
