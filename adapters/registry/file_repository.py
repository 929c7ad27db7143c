"""Uploaded files (training and validation data, OpenAI's /v1/files): rows of a tenant; the bytes
are blobs. A deleted file is a tombstone."""

from sqlalchemy import select, update

from adapters.errors import NotFoundError
from adapters.registry.models import FileStatus, StoredFile
from adapters.registry.public_ids import new_id
from adapters.registry.repository import Repository


class FileRepository(Repository):
    def add_file(self, tenant_id: int, filename: str, purpose: str, size: int, sha256: str) -> StoredFile:
        with self.session() as s:
            row = StoredFile(id=new_id("file"), tenant_id=tenant_id, filename=filename, purpose=purpose, bytes=size,
                             sha256=sha256, status=FileStatus.processed)
            s.add(row)
            s.flush()
            return row

    def get_file(self, tenant_id: int, file_id: str, *, param: str = "file_id") -> StoredFile:
        with self.session() as s:
            row = s.scalar(select(StoredFile).where(StoredFile.id == file_id, StoredFile.tenant_id == tenant_id,
                                                    StoredFile.status == FileStatus.processed))
        if row is None:
            raise NotFoundError(f"No such file: {file_id!r}", code="file_not_found", param=param)
        return row

    def list_files(self, tenant_id: int) -> list[StoredFile]:
        with self.session() as s:
            return list(s.scalars(select(StoredFile).where(StoredFile.tenant_id == tenant_id,
                                                           StoredFile.status == FileStatus.processed)
                                  .order_by(StoredFile.created_at.desc())))

    def delete_file(self, tenant_id: int, file_id: str) -> StoredFile:
        row = self.get_file(tenant_id, file_id)
        with self.session() as s:
            s.execute(update(StoredFile).where(StoredFile.id == row.id).values(status=FileStatus.deleted))
        return row
