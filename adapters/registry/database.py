"""Engine and session factory for the registry; the schema is always brought up by Alembic."""

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

SCHEMA_MIGRATIONS_DIR = Path(__file__).parent / "schema_migrations"  # Alembic


def make_engine(url: str, sqlite_synchronous: str = "FULL") -> Engine:
    """``sqlite_synchronous``: FULL (default) makes every commit durable before it returns, so a
    power loss cannot undo a commit whose consequences (deleted blobs, answered uploads) happened;
    NORMAL (WAL) may lose the last commits. benchmarks/sqlite_durability.py measures the cost."""
    if sqlite_synchronous not in ("FULL", "NORMAL"):
        raise ValueError(f"sqlite_synchronous must be FULL or NORMAL, got {sqlite_synchronous!r}")
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _):  # WAL: readers never block the writer
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA synchronous={sqlite_synchronous}")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def serialize_on(s: Session, key: str) -> None:
    """Hold a lock named ``key`` until this transaction ends, so that check-then-write sequences
    under the same key run one at a time across gateways: PostgreSQL's advisory transaction lock;
    on SQLite the one write lock, which any write statement takes and keeps until commit (even
    one that changes no row)."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": key})
    else:
        s.execute(text("UPDATE blob_claims SET sha256 = sha256 WHERE 1 = 0"))


def upgrade_schema(engine: Engine) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(SCHEMA_MIGRATIONS_DIR))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
