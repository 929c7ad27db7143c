"""API keys: random, shown once, stored only as a sha256 hash.

A fast hash is right here (not bcrypt): keys carry 256 bits of randomness, so there is
nothing to brute-force, and the lookup sits on every request's path.
"""

import hashlib
import secrets

KEY_PREFIX = "psk-"


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def display_prefix(key: str) -> str:
    return key[: len(KEY_PREFIX) + 6]
