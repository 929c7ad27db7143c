"""Routes of the tenant-facing adapter API: upload, list, show, delete, pin, eval set."""

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse

from adapters.format.eval_set import MAX_EVAL_BYTES
from server.adapters_api.protocol import AdapterDeleted, AdapterList, AdapterPublic, AdapterVersions
from server.migrations_api.protocol import PinRequest
from server.deps import AdaptersDep, EvalSetsDep, PlacementDep, ServedDep, TenantDep
from adapters.errors import UnsupportedMediaTypeError

router = APIRouter(prefix="/v1/adapters")


def require_multipart(request: Request) -> None:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise UnsupportedMediaTypeError("send the adapter as multipart/form-data", code="unsupported_media_type")


@router.post("", dependencies=[Depends(require_multipart)])
async def upload_adapter(
    tenant: TenantDep,
    adapters: AdaptersDep,
    name: Annotated[str, Form(description="Adapter name; re-using it adds a version.")],
    file: Annotated[list[UploadFile], File(description="adapter_config.json + adapter_model.safetensors, "
                                                       "or one .tar/.tar.gz/.zip archive")],
    base_model: Annotated[str | None, Form(description="name or name@version; default the only base")] = None,
    description: Annotated[str, Form()] = "",
    trained_with: Annotated[str, Form(description="a training method (lora, trans-peft, beamlora, light-peft, or one of those two +trans-peft) or unknown")] = "unknown",
    eval_set: Annotated[UploadFile | None, File(description="JSONL eval set kept for base upgrades")] = None,
    eval_scoring: Annotated[str, Form(description="exact_match | contains")] = "exact_match",
):
    """Upload a PEFT LoRA adapter: 201 when ready, 202 while its live check waits for a worker."""
    adapter, finished = await adapters.upload(
        tenant, file, name=name, base_model=base_model, description=description, trained_with=trained_with,
        eval_set=eval_set, eval_scoring=eval_scoring)
    return JSONResponse(AdapterPublic.of(adapter).model_dump(mode="json"), status_code=201 if finished else 202)


@router.get("")
async def list_adapters(tenant: TenantDep, adapters: AdaptersDep) -> AdapterList:
    rows = await adapters.list_for(tenant)
    return AdapterList(data=[AdapterPublic.of(a) for a in rows])


@router.get("/{name}")
async def get_adapter(name: str, tenant: TenantDep, adapters: AdaptersDep) -> AdapterVersions:
    rows = await adapters.versions(tenant, name)
    return AdapterVersions(name=rows[0].name, versions=[AdapterPublic.of(a) for a in rows])


@router.delete("/{name}")
async def delete_adapter(name: str, tenant: TenantDep, adapters: AdaptersDep, served: ServedDep) -> AdapterDeleted:
    deleted = await adapters.delete(tenant, name)
    await served.reconcile()  # the last adapter on an old base version may have gone
    return AdapterDeleted(id=name, versions=[a.version for a in deleted])


@router.post("/{name}/pin")
async def pin_adapter(name: str, body: PinRequest, tenant: TenantDep, placement: PlacementDep) -> AdapterVersions:
    """Pin ``name`` (every ready version) or ``name@v`` to a base version: migrations leave it there."""
    rows = await placement.pin(tenant, name, body.base_version)
    return AdapterVersions(name=rows[0].name, versions=[AdapterPublic.of(a) for a in rows])


@router.delete("/{name}/pin")
async def unpin_adapter(name: str, tenant: TenantDep, placement: PlacementDep) -> AdapterVersions:
    rows = await placement.unpin(tenant, name)
    return AdapterVersions(name=rows[0].name, versions=[AdapterPublic.of(a) for a in rows])


@router.put("/{name}/eval_set", dependencies=[Depends(require_multipart)])
async def put_eval_set(
    name: str,
    tenant: TenantDep,
    eval_sets: EvalSetsDep,
    eval_set: Annotated[UploadFile, File(description="JSONL of {prompt|messages, expected}")],
    eval_scoring: Annotated[str, Form(description="exact_match | contains")] = "exact_match",
) -> AdapterVersions:
    """Give ``name`` (every ready version) or ``name@v`` the eval set that judges it in base upgrades."""
    raw = await eval_set.read(MAX_EVAL_BYTES + 1)
    rows = await eval_sets.replace(tenant, name, raw, eval_scoring)
    return AdapterVersions(name=rows[0].name, versions=[AdapterPublic.of(a) for a in rows])
