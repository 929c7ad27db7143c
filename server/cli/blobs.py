"""``peftserve blobs``: the blob store's orphans (offline: reads the registry and the store the
settings name, like ``peftserve base import``)."""

from typing import Annotated

import typer

from server.cli.command_output import JsonOpt, emit
from server.settings import Settings

blobs_app = typer.Typer(help="The blob store (adapter weights, configs, eval sets, training files).",
                        no_args_is_help=True)


@blobs_app.command("sweep")
def sweep(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be deleted.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete blobs no row references, older than PEFTSERVE_BLOB_GRACE_S (gateways also do this
    every PEFTSERVE_BLOB_SWEEP_INTERVAL_S)."""
    from adapters.registry.blob_references import BlobReferences
    from adapters.registry.database import make_engine, make_session_factory, upgrade_schema
    from adapters.storage.blob_lifecycle import BlobLifecycle
    from server.app import make_blob_store

    settings = Settings()
    engine = make_engine(settings.database_url, settings.sqlite_synchronous)
    upgrade_schema(engine)
    lifecycle = BlobLifecycle(make_blob_store(settings), BlobReferences(make_session_factory(engine)),
                              grace_s=settings.blob_grace_s)
    report = lifecycle.sweep(dry_run=dry_run)
    engine.dispose()
    verb = "would delete" if dry_run else "deleted"
    emit(as_json, {"dry_run": dry_run, "examined": report.examined, "deleted": report.deleted},
         f"examined {report.examined} candidate blobs; {verb} {len(report.deleted)} unreferenced ones")
