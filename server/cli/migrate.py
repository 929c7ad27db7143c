"""``peftserve migrate``: move adapters onto a new base version, watch with a progress bar,
show the report, cancel, roll back."""

import time
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from server.cli.command_output import (Col, JsonOpt, UrlOpt, WideOpt, admin_call, console, emit, emit_table,
                                      make_table)

migrate_app = typer.Typer(help="Base-model upgrades: migrate adapters to a new base version.", no_args_is_help=True)

ACTIVE = ("queued", "running")


def _summary(job: dict) -> str:
    p = job["progress"]
    return (f"migration {job['id']} {job['base_model']}@{job['from_version']} -> @{job['to_version']}: "
            f"{job['status']}; {p['migrated']} migrated, {p['kept_on_old']} kept on old, "
            f"{p['incompatible']} incompatible, {p.get('errors', 0)} not judged, {p['skipped']} skipped of {p['total']}")


# At 80 columns: who, what was decided, where it is served and why; the scores as room allows.
ITEM_COLUMNS = [Col("adapter"), Col("decision"), Col("served on", drop=1), Col("cand", drop=2), Col("ref", drop=2),
                Col("retention (lower)", drop=3), Col("floor", drop=4), Col("gain kept", drop=4), Col("agree", drop=5),
                Col("trained", drop=6), Col("reasons", wrap=True)]


def _items_table(job: dict, wide: bool = False, width: int | None = None):
    rows = []
    for i in job["items"]:
        e = i["evidence"] or {}
        pct = lambda v: "" if v is None else f"{v:.0%}"  # noqa: E731
        rows.append({"adapter": f"{i['tenant']}/{i['adapter']}@{i['adapter_version']}", "trained": i["trained_with"],
                     "decision": i["decision"] or i["state"], "ref": pct(e.get("reference")),
                     "floor": pct(e.get("floor")), "cand": pct(e.get("candidate")),
                     "retention (lower)": _retention(e),
                     "gain kept": pct(e.get("gain_kept")), "agree": pct(e.get("agreement")),
                     "served on": i["served_on"], "reasons": "; ".join(i["reasons"])})
    return make_table(_summary(job), rows, ITEM_COLUMNS, wide=wide, width=width)


def _retention(evidence: dict) -> str:
    """'92% (71%)': the estimate and its lower confidence bound (how far a small eval set can vouch)."""
    if evidence.get("retention") is None:
        return ""
    lower = evidence.get("retention_lower")
    return f"{evidence['retention']:.0%}" + ("" if lower is None else f" ({lower:.0%})")


def _watch(url: str | None, as_json: bool, job: dict, poll_s: float = 1.0) -> dict:
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), disable=as_json, console=console) as progress:
        task = progress.add_task(f"migrating to @{job['to_version']}", total=job["progress"]["total"])
        while True:
            progress.update(task, completed=job["progress"]["finished"])
            if job["status"] not in ACTIVE:
                return job
            time.sleep(poll_s)
            job = admin_call(url, as_json, "GET", f"/admin/migrations/{job['id']}")


@migrate_app.command("start")
def migrate_start(
    base: Annotated[str, typer.Argument(help="Base model name.")],
    to_version: Annotated[int | None, typer.Option("--to", help="Target version (default: newest).")] = None,
    from_version: Annotated[int | None, typer.Option("--from", help="Old version (default: the one before).")] = None,
    tenant: Annotated[list[str] | None, typer.Option(help="Only this tenant's adapters (repeatable).")] = None,
    adapter: Annotated[list[str] | None, typer.Option(help="Only tenant/name[@version] (repeatable).")] = None,
    wait: Annotated[bool, typer.Option(help="Show progress until the job ends, then its report.")] = True,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
    wide: WideOpt = False,
) -> None:
    """Move every ready adapter of the old version (or a selection) to the new one, validating each."""
    body = {"base_model": base, "to_version": to_version, "from_version": from_version, "tenants": tenant or None,
            "adapters": adapter or None}
    job = admin_call(url, as_json, "POST", "/admin/migrations", json=body)
    if not wait:
        return emit(as_json, job, _summary(job))
    job = _watch(url, as_json, job)
    emit_table(as_json, job, _items_table(job, wide), wide)


@migrate_app.command("show")
def migrate_show(job_id: str, url: UrlOpt = None, as_json: JsonOpt = False, wide: WideOpt = False) -> None:
    """A job's adapters with their scores, decisions and reasons."""
    job = admin_call(url, as_json, "GET", f"/admin/migrations/{job_id}")
    emit_table(as_json, job, _items_table(job, wide), wide)


@migrate_app.command("list")
def migrate_list(url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """Every migration job, newest first."""
    jobs = admin_call(url, as_json, "GET", "/admin/migrations")["data"]
    emit(as_json, {"migrations": jobs}, "\n".join(_summary(j) for j in jobs) or "no migration jobs")


@migrate_app.command("cancel")
def migrate_cancel(job_id: str, url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """Stop a job after the adapter in progress (moved adapters stay; roll back to undo)."""
    job = admin_call(url, as_json, "POST", f"/admin/migrations/{job_id}/cancel")
    emit(as_json, job, _summary(job))


@migrate_app.command("rollback")
def migrate_rollback(job_id: str, url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """Move every adapter the job promoted back to the old base version."""
    job = admin_call(url, as_json, "POST", f"/admin/migrations/{job_id}/rollback")
    emit(as_json, job, _summary(job))
