"""Strict parser of a safetensors header, run before any tensor data is read.

Uploaded weight files are untrusted, so the header is checked on its own terms (length,
JSON shape, dtypes, offsets inside the file, no overlaps, sizes that match dtype x shape)
instead of trusting a library to fail safely on a hostile file.
"""

import math
import struct
from dataclasses import dataclass
from pathlib import Path

from adapters.format.untrusted_json import loads_untrusted
from adapters.errors import AdapterInvalidError

# Bytes per element of the dtypes an adapter or base model may carry.
DTYPE_SIZES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8}
MAX_HEADER_BYTES = 100 * 1024 * 1024
MAX_TENSORS = 100_000


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int  # offset into the data section
    end: int


@dataclass(frozen=True)
class SafetensorsHeader:
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    data_offset: int  # where the data section starts in the file


def _fail(message: str, code: str = "invalid_safetensors") -> AdapterInvalidError:
    return AdapterInvalidError(message, code=code)


def read_header(path: Path, *, allowed_dtypes: set[str] | None = None, display_name: str | None = None
                ) -> SafetensorsHeader:
    """``display_name`` names the file in errors (an upload's temp file has a meaningless name)."""
    allowed = allowed_dtypes or set(DTYPE_SIZES)
    name = display_name or path.name
    file_size = path.stat().st_size
    if file_size < 8:
        raise _fail(f"{name}: {file_size} bytes is too short for a safetensors file")
    with path.open("rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        if header_len == 0 or header_len > MAX_HEADER_BYTES or 8 + header_len > file_size:
            raise _fail(
                f"{name}: header length {header_len} is not within the file "
                f"({file_size} bytes; at most {MAX_HEADER_BYTES} allowed); not a safetensors file"
            )
        raw = f.read(header_len)
    try:
        header = loads_untrusted(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:  # JSONDecodeError and too-deep nesting
        raise _fail(f"{name}: header is not valid UTF-8 JSON ({e.__class__.__name__})") from None
    if not isinstance(header, dict):
        raise _fail(f"{name}: header must be a JSON object")
    metadata = header.pop("__metadata__", {}) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _fail(f"{name}: __metadata__ must map strings to strings")
    if len(header) > MAX_TENSORS:
        raise _fail(f"{name}: {len(header)} tensors exceeds the limit of {MAX_TENSORS}")

    data_size = file_size - 8 - header_len
    tensors = {key: _parse_entry(name, key, entry, allowed, data_size) for key, entry in header.items()}
    _check_no_overlap(name, tensors.values())
    return SafetensorsHeader(tensors=tensors, metadata=metadata, data_offset=8 + header_len)


def _parse_entry(file: str, name: str, entry: object, allowed: set[str], data_size: int) -> TensorInfo:
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise _fail(f"{file}: tensor {name!r} entry must have exactly dtype, shape and data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in allowed:
        raise _fail(
            f"{file}: tensor {name!r} has dtype {dtype!r}; allowed: {sorted(allowed)}", "invalid_dtype"
        )
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise _fail(f"{file}: tensor {name!r} shape {shape!r} is not a list of non-negative ints")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
        raise _fail(f"{file}: tensor {name!r} data_offsets {offsets!r} must be two ints")
    start, end = offsets
    if not 0 <= start <= end <= data_size:
        raise _fail(
            f"{file}: tensor {name!r} data_offsets [{start}, {end}] point outside the "
            f"{data_size}-byte data section",
            "invalid_offsets",
        )
    expected = math.prod(shape) * DTYPE_SIZES[dtype]
    if end - start != expected:
        raise _fail(
            f"{file}: tensor {name!r} occupies {end - start} bytes but dtype {dtype} x shape "
            f"{shape} needs {expected}",
            "invalid_offsets",
        )
    return TensorInfo(name, dtype, tuple(shape), start, end)


def _check_no_overlap(file: str, tensors) -> None:
    last_end, last_name = 0, None
    for t in sorted(tensors, key=lambda t: (t.start, t.end)):
        if t.start < last_end and t.end > t.start:
            raise _fail(f"{file}: tensors {last_name!r} and {t.name!r} overlap", "invalid_offsets")
        if t.end > last_end:
            last_end, last_name = t.end, t.name
