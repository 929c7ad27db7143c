"""/v1/files: training data for fine-tuning jobs, checked line by line on upload."""

import asyncio
from typing import Annotated

from fastapi import APIRouter, File, Form, Response, UploadFile

from server.deps import FilesDep, TenantDep
from server.files_api.protocol import FileDeleted, FileList, FileObject

router = APIRouter(prefix="/v1/files")


@router.post("")
async def upload_file(tenant: TenantDep, files: FilesDep, file: Annotated[UploadFile, File()],
                      purpose: Annotated[str, Form()]) -> FileObject:
    return FileObject.of(await files.upload(tenant.id, file, purpose))


@router.get("")
async def list_files(tenant: TenantDep, files: FilesDep) -> FileList:
    rows = await asyncio.to_thread(files.files.list_files, tenant.id)
    return FileList(data=[FileObject.of(f) for f in rows])


@router.get("/{file_id}")
async def retrieve_file(file_id: str, tenant: TenantDep, files: FilesDep) -> FileObject:
    return FileObject.of(await asyncio.to_thread(files.files.get_file, tenant.id, file_id))


@router.get("/{file_id}/content")
async def file_content(file_id: str, tenant: TenantDep, files: FilesDep) -> Response:
    """The file's bytes as uploaded (OpenAI's ``files.content``); another tenant's file is 404."""
    return Response(await asyncio.to_thread(files.read, tenant.id, file_id), media_type="application/octet-stream")


@router.delete("/{file_id}")
async def delete_file(file_id: str, tenant: TenantDep, files: FilesDep) -> FileDeleted:
    return FileDeleted(id=(await asyncio.to_thread(files.delete, tenant.id, file_id)).id)
