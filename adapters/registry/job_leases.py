"""Claim background jobs (fine-tuning, migrations) through the database, so that with any
number of gateways on one database each job runs on exactly one of them, and a job whose
gateway died is taken over once its lease runs out.

A claim is a conditional UPDATE (compare-and-set on status and lease): on PostgreSQL the row
lock makes a second claimer re-check the condition and lose; SQLite serialises writers. The
runner renews its lease while it works and stops at once if a renewal finds it lost the job.

A claim may also be capped per group (at most N running jobs per tenant): the count is part of
the same UPDATE, and on PostgreSQL an advisory lock on the group serialises such claims, since
two claims of different rows would otherwise each count without seeing the other.
"""

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, text, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from adapters.registry.models import utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupCap:
    """At most ``limit`` jobs with ``column == value`` running at once (live lease)."""

    column: str
    value: Any
    limit: int


class JobLeases:
    def __init__(self, sessions: sessionmaker[Session], model: Any, *, queued: Any, running: Any):
        self._sessions = sessions
        self.model = model
        self.queued = queued
        self.running = running

    def _claimable(self, now):
        m = self.model
        return or_(m.status == self.queued, and_(m.status == self.running, or_(
            m.lease_expires_at.is_(None), m.lease_expires_at < now)))

    def claimable_ids(self, limit: int = 20) -> list[str]:
        """Jobs free to claim, oldest first: queued, or running with an expired lease."""
        with self._sessions.begin() as s:
            return list(s.scalars(select(self.model.id).where(self._claimable(utcnow()))
                                  .order_by(self.model.created_at).limit(limit)))

    def claim(self, job_id: str, owner: str, lease_s: float, cap: GroupCap | None = None) -> str | None:
        """Take the job if it is still claimable (and ``cap`` leaves room); returns its previous
        owner ('' if none) or None."""
        now = utcnow()
        m = self.model
        conditions = [m.id == job_id, self._claimable(now)]
        with self._sessions.begin() as s:
            if cap is not None:
                if s.get_bind().dialect.name == "postgresql":
                    s.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                              {"key": f"{m.__tablename__}:{cap.column}:{cap.value}"})
                other = aliased(m)
                running = (select(func.count(other.id)).where(
                    getattr(other, cap.column) == cap.value, other.status == self.running, other.id != job_id,
                    other.lease_expires_at > now).scalar_subquery())
                conditions.append(running < cap.limit)
            previous = s.scalar(select(m.claimed_by).where(m.id == job_id))
            won = s.execute(update(m).where(*conditions).values(
                status=self.running, claimed_by=owner, lease_expires_at=now + timedelta(seconds=lease_s)))
            return (previous or "") if won.rowcount == 1 else None

    def renew(self, job_id: str, owner: str, lease_s: float) -> bool:
        """Extend our lease; False when the job is no longer ours (taken over, or finished)."""
        m = self.model
        with self._sessions.begin() as s:
            done = s.execute(update(m).where(m.id == job_id, m.claimed_by == owner, m.status == self.running)
                             .values(lease_expires_at=utcnow() + timedelta(seconds=lease_s)))
            return done.rowcount == 1

    def write_if_held(self, job_id: str, owner: str, **values) -> bool:
        """Update a running job we still hold (progress such as its checkpoint); False if not ours."""
        m = self.model
        with self._sessions.begin() as s:
            done = s.execute(update(m).where(m.id == job_id, m.claimed_by == owner, m.status == self.running)
                             .values(**values))
            return done.rowcount == 1

    def finish(self, job_id: str, owner: str, **values) -> bool:
        """Final write of a job we hold (its outcome); nothing if another gateway holds it now."""
        m = self.model
        with self._sessions.begin() as s:
            done = s.execute(update(m).where(m.id == job_id, m.claimed_by == owner)
                             .values(lease_expires_at=None, **values))
            return done.rowcount == 1

    async def hold(self, job_id: str, owner: str, lease_s: float, work: asyncio.Task,
                   on_lost: Callable[[], None]) -> None:
        """Renew our lease until ``work`` is done; ``on_lost`` (once) if another gateway took the
        job. If we are cancelled (shutting down), ``work`` is cancelled too: the job keeps its
        state and is resumed by whoever claims it next."""
        lost = False
        try:
            while not work.done():
                await asyncio.wait({work}, timeout=lease_s / 3)
                if not work.done() and not lost and not await asyncio.to_thread(self.renew, job_id, owner, lease_s):
                    log.warning("job %s: lease lost to another gateway; stopping here", job_id)
                    lost = True
                    on_lost()
        except asyncio.CancelledError:
            work.cancel()
            raise
