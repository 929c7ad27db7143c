"""The one background loop of every kind of leased job (fine-tuning, migrations): claim what is
free through the database (job_leases.py) within this gateway's limit, run each job while
renewing its lease, and stop a job at once when another gateway took it over (its task is
cancelled; whoever holds it now resumes it from the database's state)."""

import asyncio
import logging
from collections.abc import Awaitable, Callable

from adapters.registry.job_leases import GroupCap, JobLeases

log = logging.getLogger(__name__)


class JobLoop:
    def __init__(self, leases: JobLeases, *, kind: str, owner: str, lease_s: float, poll_s: float, capacity: int,
                 run: Callable[[str], Awaitable[None]],
                 cap: Callable[[str], Awaitable[GroupCap | None]] | None = None,
                 on_takeover: Callable[[str, str], Awaitable[None]] | None = None):
        """``run(job_id)`` runs one claimed job; ``cap(job_id)`` a per-group limit for claiming it;
        ``on_takeover(job_id, previous_owner)`` when the job was abandoned by a gateway that died."""
        self.leases = leases
        self.kind = kind
        self.owner = owner  # this gateway, as named in the leases it holds
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.capacity = capacity
        self._run = run
        self._cap = cap
        self._on_takeover = on_takeover
        self._running: dict[str, asyncio.Task] = {}
        self._loop_task: asyncio.Task | None = None

    async def start(self) -> None:
        self._loop_task = asyncio.create_task(self._loop(), name=f"{self.kind} runner")

    async def stop(self) -> None:
        """Stop claiming and cancel the running jobs (each resumes when claimed again)."""
        tasks = [t for t in (self._loop_task, *self._running.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            try:
                await self._claim_what_fits()
            except Exception:
                log.exception("%s scheduler failed; retrying", self.kind)
            await asyncio.sleep(self.poll_s)

    async def _claim_what_fits(self) -> None:
        """Claim free jobs (queued, or abandoned by a gateway that died), oldest first."""
        self._running = {k: t for k, t in self._running.items() if not t.done()}
        for job_id in await asyncio.to_thread(self.leases.claimable_ids):
            if len(self._running) >= self.capacity:
                return
            if job_id in self._running:
                continue
            cap = await self._cap(job_id) if self._cap is not None else None
            previous = await asyncio.to_thread(self.leases.claim, job_id, self.owner, self.lease_s, cap)
            if previous is None:
                continue  # another gateway was faster, or the group is at its limit
            if previous:
                log.info("%s %s: taking over from %s, whose lease ran out", self.kind, job_id, previous)
                if self._on_takeover is not None:
                    await self._on_takeover(job_id, previous)
            self._running[job_id] = asyncio.create_task(self._run_holding_lease(job_id), name=f"{self.kind} {job_id}")

    async def _run_holding_lease(self, job_id: str) -> None:
        work = asyncio.create_task(self._run(job_id), name=f"{self.kind} {job_id} work")
        await self.leases.hold(job_id, self.owner, self.lease_s, work, on_lost=work.cancel)
        try:
            await work
        except asyncio.CancelledError:
            if asyncio.current_task().cancelling():
                raise  # we are shutting down ourselves; a lost lease ends here quietly
        except Exception:
            log.exception("%s %s crashed outside its own error handling", self.kind, job_id)
