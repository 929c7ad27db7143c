"""Ids the API shows for rows (``file-...``, ``ftjob-...``, ``mig-...``), as OpenAI's look."""

import secrets


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"
