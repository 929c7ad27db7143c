"""Wire types of /v1/files (OpenAI's file object)."""

from typing import Literal

from pydantic import BaseModel

from adapters.registry.models import StoredFile
from server.list_envelope import ListEnvelope


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str = "processed"

    @classmethod
    def of(cls, f: StoredFile) -> "FileObject":
        return cls(id=f.id, bytes=f.bytes, created_at=int(f.created_at.timestamp()), filename=f.filename,
                   purpose=f.purpose, status=f.status.value)


FileList = ListEnvelope[FileObject]


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True
