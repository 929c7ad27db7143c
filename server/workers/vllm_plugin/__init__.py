"""peftserve's vLLM general plugin (entry point ``vllm.general_plugins``: ``peftserve``).

vLLM calls :func:`register` once in every process it starts (API server, engine core, workers)
before a model is built. Runs inside the vLLM worker: it must not import the gateway (settings,
registry, FastAPI), only vLLM, torch and this package.
"""

import logging
import os

# Under vLLM's logger so that the lines land in the worker's log (vLLM gives only "vllm" a handler).
log = logging.getLogger("vllm.peftserve")

# The CPU wrapper vLLM would use; ours replaces it on the CPU platform only.
UPSTREAM_CPU_WRAPPER = "vllm.lora.punica_wrapper.punica_cpu.PunicaWrapperCPU"
GROUPED_CPU_WRAPPER = "server.workers.vllm_plugin.grouped_lora_cpu.GroupedPunicaWrapperCPU"

# "native" (default: our wrapper with its C++ op, or its torch path where the op cannot be built),
# "torch" (our wrapper, torch ops only) or "vllm" (vLLM's own CPU path: A/B runs, escape hatch).
KERNEL_ENV = "PEFTSERVE_LORA_KERNEL"
LORA_KERNELS = ("native", "torch", "vllm")


def lora_kernel() -> str:
    value = os.environ.get(KERNEL_ENV, "native").strip().lower()
    if value == "peftserve":  # the name of "native" before the op existed
        return "native"
    if value not in LORA_KERNELS:
        raise ValueError(f"{KERNEL_ENV}={value!r}: expected one of {', '.join(LORA_KERNELS)}")
    return value


def register(platform=None) -> str | None:
    """Register the blob-store LoRA resolver when this worker fetches its own adapters
    (blob_resolver.py), and make the CPU platform build our LoRA wrapper (any other platform: no
    wrapper change).

    Returns the wrapper's qualified name when it was installed, None otherwise. ``platform`` is
    vLLM's current platform unless a test passes another one.
    """
    from server.workers.vllm_plugin.blob_resolver import register_resolver

    if register_resolver():
        log.info("peftserve: adapters are fetched from the blob store by this worker")
    if platform is None:
        from vllm.platforms import current_platform as platform
    if not platform.is_cpu() or lora_kernel() == "vllm":
        return None
    # CpuPlatform resolves the wrapper class by qualified name when a LoRA manager is built
    # (vllm/lora/punica_wrapper/punica_selector.py); overriding that one classmethod on the
    # platform class is the whole substitution, and it is idempotent (plugins load per process).
    platform_cls = type(platform)
    platform_cls.get_punica_wrapper = classmethod(lambda cls: GROUPED_CPU_WRAPPER)
    log.info("peftserve: CPU LoRA path replaced by %s", GROUPED_CPU_WRAPPER)
    return GROUPED_CPU_WRAPPER
