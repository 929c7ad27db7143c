"""Storing, releasing and collecting blobs safely when rows come and go concurrently (uploads,
deletions, eval-set replacements, several gateways): the one place blobs are deleted.
The protocol is described in adapters/registry/blob_references.py."""

import io
import logging
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from adapters.registry.blob_references import BlobReferences
from adapters.storage.blob_store import BlobStore

log = logging.getLogger(__name__)


@dataclass
class SweepReport:
    examined: int = 0
    deleted: list[str] = field(default_factory=list)
    kept_referenced_or_young: int = 0


class BlobLifecycle:
    def __init__(self, blobs: BlobStore, references: BlobReferences, grace_s: float):
        self.blobs = blobs
        self.references = references
        self.grace_s = grace_s

    @contextmanager
    def stored(self, put: Callable[[], tuple[str, int]]):
        """``with lifecycle.stored(lambda: blobs.put_file(p)) as (sha, size):`` insert the row that
        references it inside the block; the blob cannot be collected before that."""
        sha, size = put()
        claim = self.references.claim(sha)
        try:
            if not self.blobs.exists(sha):  # collected between our put and our claim: store it again
                put()
            yield sha, size
        finally:
            self.references.unclaim(claim)

    def stored_bytes(self, data: bytes):
        return self.stored(lambda: self.blobs.put_stream(io.BytesIO(data)))

    def stored_file(self, path: Path):
        return self.stored(lambda: self.blobs.put_file(path))

    def release(self, sha256s: Iterable[str | None]) -> list[str]:
        """Delete the blobs no row references any more (and nobody is referencing right now);
        returns the deleted ones."""
        deleted = []
        for sha in sorted({s for s in sha256s if s}):
            if self.references.collect_if_unused(sha, self.grace_s, self.blobs.delete):
                deleted.append(sha)
        return deleted

    def sweep(self, *, dry_run: bool = False) -> SweepReport:
        """Collect orphans: blobs in the store that no row references, older than the grace period
        (a crash between storing and referencing, or releases that failed)."""
        report = SweepReport()
        cutoff = time.time() - self.grace_s
        candidates = {sha for sha, modified in self.blobs.list_blobs() if modified < cutoff}
        stale = datetime.now(timezone.utc) - timedelta(seconds=self.grace_s)
        candidates |= set(self.references.stale_claims(stale))
        report.examined = len(candidates)
        for sha in sorted(candidates):
            if dry_run:
                if not self.references.referenced(sha):
                    report.deleted.append(sha)
                continue
            if self.references.collect_if_unused(sha, self.grace_s, self.blobs.delete):
                report.deleted.append(sha)
            else:
                report.kept_referenced_or_young += 1
        if report.deleted and not dry_run:
            log.info("blob sweep deleted %d unreferenced blobs", len(report.deleted))
        return report
