"""Turn a multipart upload into an ``AdapterSubmission``: spool files to disk under limits,
unpack an archive safely, and tell the client precisely what is wrong with the parts."""

import asyncio
import os
import shutil
import uuid
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import UploadFile

from adapters.format.archive import PICKLE_SUFFIXES, extract_adapter, is_archive
from adapters.format.peft_config import MAX_CONFIG_BYTES
from adapters.registration import AdapterSubmission
from adapters.errors import AdapterInvalidError, InvalidRequestError, UnsupportedMediaTypeError
from server.settings import UploadSettings
from server.upload_spool import spool_to_disk

CONFIG, WEIGHTS = "adapter_config.json", "adapter_model.safetensors"


@asynccontextmanager
async def upload_workspace(settings: UploadSettings):
    """A private temp folder for one upload, removed whatever happens."""
    folder = settings.data_dir / "uploads" / uuid.uuid4().hex
    folder.mkdir(parents=True)
    try:
        yield folder
    finally:
        await asyncio.to_thread(shutil.rmtree, folder, True)


async def build_submission(settings: UploadSettings, workspace: Path, files: list[UploadFile], *, name: str,
                           base_model: str | None, description: str, trained_with: str,
                           eval_set: UploadFile | None, eval_scoring: str) -> AdapterSubmission:
    if not files:
        raise InvalidRequestError("no file: send adapter_config.json and adapter_model.safetensors, or one "
                                  ".tar/.tar.gz/.zip archive holding them", param="file")
    spooled: dict[str, Path] = {}
    for upload in files:
        filename = os.path.basename(upload.filename or "")
        if filename in spooled:
            raise InvalidRequestError(f"{filename!r} was sent twice", param="file")
        spooled[filename] = await spool_to_disk(upload, workspace, limit=settings.max_upload_bytes)

    if len(spooled) == 1 and is_archive(next(iter(spooled))):
        filename, path = next(iter(spooled.items()))
        # Decompression reads and writes up to max_upload_bytes: off the event loop.
        parts = await asyncio.to_thread(extract_adapter, path, filename, workspace / "unpacked",
                                        max_members=settings.max_archive_members, max_bytes=settings.max_upload_bytes)
        config_path, weights_path, weights_name = parts[CONFIG], parts[WEIGHTS], WEIGHTS
    else:
        config_path, weights_path, weights_name = _pick_folder_files(spooled)

    if config_path.stat().st_size > MAX_CONFIG_BYTES:
        raise AdapterInvalidError(f"{CONFIG}: larger than {MAX_CONFIG_BYTES} bytes", code="invalid_adapter_config",
                                  param=CONFIG)
    eval_bytes = None
    if eval_set is not None and (eval_set.filename or eval_set.size):
        eval_path = await spool_to_disk(eval_set, workspace, limit=settings.max_upload_bytes)
        eval_bytes = await asyncio.to_thread(eval_path.read_bytes)
    config_json = await asyncio.to_thread(config_path.read_bytes)
    return AdapterSubmission(name=name, config_json=config_json, weights_path=weights_path,
                             weights_filename=weights_name, base_model=base_model, description=description,
                             trained_with=trained_with, eval_set=eval_bytes, eval_scoring=eval_scoring)


def _pick_folder_files(spooled: dict[str, Path]) -> tuple[Path, Path, str]:
    weights = [n for n in spooled if n != CONFIG]
    pickles = [n for n in weights if n.lower().endswith(PICKLE_SUFFIXES)]
    if CONFIG not in spooled:
        raise InvalidRequestError(f"{CONFIG} is missing from the upload (got {sorted(spooled)})", param="file")
    if len(weights) != 1:
        raise InvalidRequestError(f"expected {CONFIG} and one weight file, got {sorted(spooled)}", param="file")
    if not pickles and not weights[0].endswith(".safetensors"):
        raise UnsupportedMediaTypeError(f"{weights[0]!r}: weights must be a .safetensors file, or send one "
                                        ".tar/.tar.gz/.zip archive", param="file")
    return spooled[CONFIG], spooled[weights[0]], weights[0]
