"""The base of the repositories, one per aggregate (tenant_repository.py, base_version_repository.py,
adapter_repository.py, fine_tuning_repository.py, migration_repository.py): the only modules
that build SQL for the rest of the code."""

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker


class Repository:
    """Base of the repositories: one transaction per ``session()`` block."""

    def __init__(self, sessions: sessionmaker[Session]):
        self._sessions = sessions

    @property
    def sessions(self) -> sessionmaker[Session]:
        return self._sessions

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions.begin() as s:
            yield s

    def ping(self) -> None:
        """Raises unless the database answers."""
        with self.session() as s:
            s.execute(select(1))
