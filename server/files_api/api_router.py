"""/v1/files: training data for fine-tuning jobs, checked line by line on upload."""

import asyncio
from typing import Annotated

from fastapi import APIRouter, File, Form, Response, UploadFile

from adapters.training.dataset import parse_records
from server.adapters_api.intake import upload_workspace
from server.deps import FineTuningDep, RegistrationDep, SettingsDep, TenantDep
from adapters.errors import InvalidRequestError
from server.files_api.protocol import FileDeleted, FileList, FileObject
from server.upload_spool import spool_to_disk

router = APIRouter(prefix="/v1/files")
PURPOSES = ("fine-tune",)


@router.post("")
async def upload_file(tenant: TenantDep, settings: SettingsDep, registration: RegistrationDep,
                      fine_tuning: FineTuningDep, file: Annotated[UploadFile, File()],
                      purpose: Annotated[str, Form()]) -> FileObject:
    if purpose not in PURPOSES:
        raise InvalidRequestError(f"purpose {purpose!r} is not supported; accepted: {list(PURPOSES)}",
                                  param="purpose")
    async with upload_workspace(settings.uploads) as workspace:
        path = await spool_to_disk(file, workspace, limit=settings.max_upload_bytes)
        await asyncio.to_thread(parse_records, path.read_bytes(), param=file.filename or "file")
        row = await asyncio.to_thread(_store, registration, fine_tuning, tenant.id, file.filename or "upload.jsonl",
                                      purpose, path)
    return FileObject.of(row)


def _store(registration, fine_tuning, tenant_id: int, filename: str, purpose: str, path):
    with registration.lifecycle.stored_file(path) as (sha, size):
        return fine_tuning.repo.add_file(tenant_id, filename, purpose, size, sha)


@router.get("")
async def list_files(tenant: TenantDep, fine_tuning: FineTuningDep) -> FileList:
    rows = await asyncio.to_thread(fine_tuning.repo.list_files, tenant.id)
    return FileList(data=[FileObject.of(f) for f in rows])


@router.get("/{file_id}")
async def retrieve_file(file_id: str, tenant: TenantDep, fine_tuning: FineTuningDep) -> FileObject:
    return FileObject.of(await asyncio.to_thread(fine_tuning.repo.get_file, tenant.id, file_id))


@router.get("/{file_id}/content")
async def file_content(file_id: str, tenant: TenantDep, fine_tuning: FineTuningDep) -> Response:
    """The file's bytes as uploaded (OpenAI's ``files.content``); another tenant's file is 404."""
    data = await asyncio.to_thread(fine_tuning.read_file, tenant.id, file_id, "file_id")
    return Response(data, media_type="application/octet-stream")


@router.delete("/{file_id}")
async def delete_file(file_id: str, tenant: TenantDep, fine_tuning: FineTuningDep,
                      registration: RegistrationDep) -> FileDeleted:
    row = await asyncio.to_thread(fine_tuning.repo.delete_file, tenant.id, file_id)
    await asyncio.to_thread(registration.lifecycle.release, [row.sha256])
    return FileDeleted(id=row.id)
