"""Copy an uploaded file to disk in chunks under a size limit; never whole in memory."""

import os
import tempfile
from pathlib import Path

from fastapi import UploadFile

from adapters.errors import PayloadTooLargeError

CHUNK = 1024 * 1024


async def spool_to_disk(upload: UploadFile, directory: Path, *, limit: int, suffix: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=directory, suffix=suffix)
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := await upload.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLargeError(
                        f"{upload.filename or 'upload'} is larger than the {limit}-byte limit", param=upload.filename)
                out.write(chunk)
        return Path(name)
    except BaseException:
        os.unlink(name)
        raise
