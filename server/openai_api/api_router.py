"""Routes of the OpenAI-compatible API; the logic lives in ``serving.py``."""

import asyncio

from fastapi import APIRouter

from adapters.errors import NotFoundError, PermissionDeniedError
from adapters.registry.names import split_ref
from server.deps import AdaptersDep, RegistryDep, ServedDep, ServingDep, TenantDep
from server.openai_api.model_resolution import model_not_found
from server.openai_api.protocol import (ChatCompletionRequest, CompletionRequest, ModelCard, ModelDeleted, ModelList,
                                       ResponsesRequest)
from server.openai_api.serving import RESPONSES

router = APIRouter(prefix="/v1")


@router.post("/completions")
async def completions(request: CompletionRequest, tenant: TenantDep, serving: ServingDep):
    return await serving.generate(tenant, "/v1/completions", request)


@router.post("/chat/completions")
async def chat_completions(request: ChatCompletionRequest, tenant: TenantDep, serving: ServingDep):
    return await serving.generate(tenant, "/v1/chat/completions", request)


@router.post("/responses")
async def responses(request: ResponsesRequest, tenant: TenantDep, serving: ServingDep):
    """OpenAI's Responses API, stateless (nothing is stored: see ResponsesRequest)."""
    return await serving.generate(tenant, RESPONSES, request)


@router.get("/models")
async def list_models(tenant: TenantDep, registry: RegistryDep) -> ModelList:
    bases = await asyncio.to_thread(registry.served_base_versions)
    adapters = await asyncio.to_thread(registry.list_adapters, tenant.id)
    latest: dict[str, object] = {}
    for b in bases:
        latest[b.base_model.name] = b
    cards = [
        ModelCard(id=name, created=int(b.created_at.timestamp()), owned_by="peftserve",
                  base_model=name, base_version=b.version)
        for name, b in latest.items()
    ]
    newest = {}
    for a in adapters:  # ordered by version: the last one per name is the newest ready version
        newest[a.name] = a
    cards += [
        ModelCard(id=a.name, created=int(a.created_at.timestamp()), owned_by=tenant.name,
                  root=a.base_version.base_model.name, parent=a.base_version.base_model.name,
                  base_model=a.base_version.base_model.name, base_version=a.base_version.version,
                  rank=a.rank, adapter_version=a.version, trained_with=a.trained_with)
        for a in newest.values()
    ]
    return ModelList(data=cards)


@router.delete("/models/{model:path}")
async def delete_model(model: str, tenant: TenantDep, registry: RegistryDep, adapters: AdaptersDep,
                       served: ServedDep) -> ModelDeleted:
    """OpenAI's model deletion, for the caller's own adapters (uploaded or fine-tuned; every
    version, or ``name@v``). Base models cannot be deleted here; others' adapters answer 404."""
    name, _ = split_ref(model)
    if name.lower() in {v.base_model.name.lower() for v in await asyncio.to_thread(registry.list_base_versions)}:
        raise PermissionDeniedError(f"{model!r} is a base model; only your own adapters can be deleted",
                                    param="model")
    try:
        await adapters.delete(tenant, model)
    except NotFoundError:
        raise model_not_found(model) from None
    await served.reconcile()  # the last adapter on an old base version may have gone
    return ModelDeleted(id=model)


@router.get("/models/{model:path}")
async def retrieve_model(model: str, tenant: TenantDep, registry: RegistryDep) -> ModelCard:
    for card in (await list_models(tenant, registry)).data:
        if card.id == model:
            return card
    raise model_not_found(model)
