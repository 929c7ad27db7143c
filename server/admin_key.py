"""The admin key: from settings, or generated once into ``<data_dir>/admin.key`` (mode 0600)."""

import os
import secrets

from server.settings import Settings


def admin_key_path(settings: Settings):
    return settings.data_dir / "admin.key"


def load_or_create_admin_key(settings: Settings) -> str:
    if settings.admin_key:
        return settings.admin_key
    path = admin_key_path(settings)
    if path.is_file():
        return path.read_text().strip()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    key = "psa-" + secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key
