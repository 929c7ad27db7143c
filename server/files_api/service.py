"""Files for fine-tuning: checked line by line on upload, stored as blobs, one tenant's each."""

import asyncio

from fastapi import UploadFile

from adapters.errors import InvalidRequestError
from adapters.registry.file_repository import FileRepository
from adapters.registry.models import StoredFile
from adapters.storage.blob_lifecycle import BlobLifecycle
from adapters.training.dataset import parse_records
from server.adapters_api.intake import upload_workspace
from server.settings import UploadSettings
from server.upload_spool import spool_to_disk

PURPOSES = ("fine-tune",)


class FileService:
    def __init__(self, files: FileRepository, lifecycle: BlobLifecycle, uploads: UploadSettings):
        self.files = files
        self.lifecycle = lifecycle
        self.uploads = uploads

    async def upload(self, tenant_id: int, file: UploadFile, purpose: str) -> StoredFile:
        if purpose not in PURPOSES:
            raise InvalidRequestError(f"purpose {purpose!r} is not supported; accepted: {list(PURPOSES)}",
                                      param="purpose")
        async with upload_workspace(self.uploads) as workspace:
            path = await spool_to_disk(file, workspace, limit=self.uploads.max_upload_bytes)
            await asyncio.to_thread(parse_records, path.read_bytes(), param=file.filename or "file")
            return await asyncio.to_thread(self._store, tenant_id, file.filename or "upload.jsonl", purpose, path)

    def _store(self, tenant_id: int, filename: str, purpose: str, path) -> StoredFile:
        with self.lifecycle.stored_file(path) as (sha, size):
            return self.files.add_file(tenant_id, filename, purpose, size, sha)

    def read(self, tenant_id: int, file_id: str, param: str = "file_id") -> bytes:
        """The file's bytes as uploaded (another tenant's file: not found)."""
        row = self.files.get_file(tenant_id, file_id, param=param)
        with self.lifecycle.blobs.open(row.sha256) as f:
            return f.read()

    def delete(self, tenant_id: int, file_id: str) -> StoredFile:
        row = self.files.delete_file(tenant_id, file_id)
        self.lifecycle.release([row.sha256])
        return row
