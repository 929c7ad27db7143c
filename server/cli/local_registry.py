"""Open the registry directly, for the commands that work without a running server."""

from server.settings import Settings


def local_registry():
    """The registry the settings name, opened here (commands that work without a running server)."""
    from adapters.registry.database import make_engine, make_session_factory, upgrade_schema
    from adapters.registry.registry import Registry

    settings = Settings()
    engine = make_engine(settings.database_url, settings.sqlite_synchronous)
    upgrade_schema(engine)
    return Registry(make_session_factory(engine))
