"""Names and references of tenants, base models and adapters: what is accepted, and ``name@version``."""

import re

from adapters.errors import InvalidRequestError

# ASCII only, matched whole (fullmatch: a "$" would let a trailing newline through).
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
VERSION_PATTERN = re.compile(r"[1-9][0-9]{0,8}")  # ASCII digits, within every database's integer


def check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidRequestError(
            f"{kind} name {name!r} is invalid: use 1-128 ASCII letters, digits, '.', '_', ':' or '-', "
            "starting with a letter or digit", param="name")
    return name


def split_ref(ref: str, param: str = "model") -> tuple[str, int | None]:
    """``name@3`` -> ("name", 3); ``name`` -> ("name", None)."""
    name, sep, version = ref.rpartition("@")
    if not sep:
        return ref, None
    if not VERSION_PATTERN.fullmatch(version):
        raise InvalidRequestError(f"version in {ref!r} must be an integer from 1 to 999999999 (ASCII digits)",
                                  param=param)
    return name, int(version)
