"""Which blobs rows reference, and claims on blobs whose reference is being made. The protocol
(adapters/storage/blob_lifecycle.py runs it):

- a writer stores the bytes, ``claim``s the digest, checks the bytes are still there (storing
  them again if not), inserts the row that references them, then ``unclaim``s;
- the collector deletes a blob only in ``collect_if_unused``: under a per-digest lock (the same
  one ``claim`` takes), and only if no row references it and no claim on it is younger than the
  grace period; the bytes go inside that locked transaction.

So a writer that re-uses a blob a deleter is releasing either claims it first (the collector then
keeps it) or claims it after the bytes went (and stores them again before referencing them). A
writer that crashed leaves a claim; once it is older than the grace period the blob is
collectable again, and a sweep collects it.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, exists, or_, select
from sqlalchemy.orm import Session, sessionmaker

from adapters.registry.database import serialize_on
from adapters.registry.models import (Adapter, AdapterStatus, BlobClaim, FileStatus, FineTuningJob, JobStatus,
                                      StoredFile, utcnow)


class BlobReferences:
    def __init__(self, sessions: sessionmaker[Session]):
        self._sessions = sessions

    @contextmanager
    def _locked(self, sha256: str) -> Iterator[Session]:
        """One transaction holding the digest's lock (database.serialize_on)."""
        with self._sessions.begin() as s:
            serialize_on(s, f"blob:{sha256}")
            yield s

    def claim(self, sha256: str, at: datetime | None = None) -> int:
        """Returns the claim's id, for ``unclaim`` once the referencing row exists."""
        with self._locked(sha256) as s:
            row = BlobClaim(sha256=sha256, claimed_at=at or utcnow())
            s.add(row)
            s.flush()
            return row.id

    def unclaim(self, claim_id: int) -> None:
        with self._sessions.begin() as s:
            s.execute(delete(BlobClaim).where(BlobClaim.id == claim_id))

    def referenced(self, sha256: str, s: Session | None = None) -> bool:
        """Whether a live adapter (not deleted or rejected), a processed file or a fine-tuning job
        that has not ended (the weights it continues from, its last checkpoint) references it."""
        live = Adapter.status.not_in([AdapterStatus.deleted, AdapterStatus.rejected])
        unfinished = FineTuningJob.status.in_([JobStatus.queued, JobStatus.running, JobStatus.paused])
        query = select(exists().where(live, or_(Adapter.weights_sha256 == sha256, Adapter.config_sha256 == sha256,
                                                Adapter.eval_set_sha256 == sha256, Adapter.manifest_sha256 == sha256))
                       | exists().where(StoredFile.sha256 == sha256, StoredFile.status == FileStatus.processed)
                       | exists().where(unfinished, or_(FineTuningJob.init_weights_sha256 == sha256,
                                                        FineTuningJob.checkpoint_sha256 == sha256)))
        if s is not None:
            return bool(s.scalar(query))
        with self._sessions() as own:
            return bool(own.scalar(query))

    def collect_if_unused(self, sha256: str, grace_s: float, delete_bytes: Callable[[str], None]) -> bool:
        """Delete the blob if nothing references it and no claim on it is younger than
        ``grace_s`` (then its stale claims go too); True if it was deleted."""
        with self._locked(sha256) as s:
            cutoff = utcnow() - timedelta(seconds=grace_s)
            newest = s.scalar(select(BlobClaim.claimed_at).where(BlobClaim.sha256 == sha256)
                              .order_by(BlobClaim.claimed_at.desc()).limit(1))
            if newest is not None and _aware(newest) > cutoff:
                return False
            if self.referenced(sha256, s):
                return False
            delete_bytes(sha256)  # inside the lock: a writer claiming now waits, then finds it gone
            s.execute(delete(BlobClaim).where(BlobClaim.sha256 == sha256))
            return True

    def stale_claims(self, older_than: datetime, limit: int = 1000) -> list[str]:
        """Digests with claims older than ``older_than`` (a writer crashed before unclaiming)."""
        with self._sessions() as s:
            return list(s.scalars(select(BlobClaim.sha256).where(BlobClaim.claimed_at < older_than)
                                  .distinct().limit(limit)))


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)  # SQLite gives naive datetimes
