"""``peftserve workers``: the gateway's workers and their adapters."""

from server.cli.command_output import JsonOpt, UrlOpt, admin_call, emit, make_table


def workers(url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """Show the gateway's workers and their resident adapters."""
    rows = admin_call(url, as_json, "GET", "/admin/workers")
    emit(as_json, {"workers": rows}, make_table("workers", rows, ["base_version", "url", "state", "pid", "restarts",
                                                               "resident_adapters"]))
