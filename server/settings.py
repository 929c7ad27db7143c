"""All peftserve settings: one pydantic-settings class read from ``PEFTSERVE_<FIELD>``, made of one
part per component (StoreSettings, WorkerSettings, UploadSettings): each component is given only
its own part (``settings.workers``, ``settings.uploads``), as the migration trial gets TrialSettings."""

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from adapters.screening.policy import ScreeningPolicy
from migration.validation_gate.gate import GateThresholds

# Prompts for the gate when an adapter has no eval set: agreement with the old base on these is
# the (weaker) evidence. General requests, so that any adapter's behaviour shows in the answers.
DEFAULT_SAMPLE_PROMPTS = [
    "Summarize in one sentence: The meeting was moved to Thursday because the room was booked.",
    "Translate to French: Good morning, how are you?",
    "What is 17 plus 25?",
    "Write a short greeting for a customer who just signed up.",
    "List three colors.",
    "Answer yes or no: Is the sun a star?",
    "Complete the sentence: The capital of Italy is",
    "Give one synonym for 'happy'.",
]


# The linear modules of a Llama-style decoder layer, as PEFT names them.
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class DataDirSettings(BaseModel):
    data_dir: Path = Path(".peftserve")
    """Root folder for the SQLite database, blob store, imported base models and worker logs."""

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"


class StoreSettings(DataDirSettings):
    """Where blobs live (the gateway's store, and what fetching workers are told)."""

    blob_dir: Path | None = None
    """The local content-addressed blob store; default ``<data_dir>/blobs``. Gateways on one
    machine (or on a shared file system) can share it, each with its own data_dir."""

    blob_store: Literal["local", "s3"] = "local"
    """Where adapter weights, configs, eval sets and training files live: ``local`` (blob_dir) or
    ``s3`` (any S3-compatible service; credentials from the usual AWS variables or files)."""

    s3_bucket: str | None = None
    """Bucket of the S3 blob store (must exist)."""

    s3_prefix: str = "peftserve/blobs"
    """Key prefix of the blobs in the bucket."""

    s3_endpoint_url: str | None = None
    """Endpoint of an S3-compatible service other than AWS (MinIO, Ceph, R2...)."""

    s3_region: str | None = None
    """Region of the bucket (AWS)."""

    @model_validator(mode="after")
    def _s3_needs_a_bucket(self):
        if self.blob_store == "s3" and not self.s3_bucket:
            raise ValueError("blob_store 's3' needs s3_bucket (PEFTSERVE_S3_BUCKET)")
        return self


class WorkerSettings(StoreSettings):
    """The workers' settings (server/workers/: starting, supervising and routing to workers)."""

    worker_api_key: str | None = None
    """Key the gateway presents to workers (vLLM's ``VLLM_API_KEY``). Workers the gateway starts get
    this one, or a random key of their own when unset; external workers need it set."""

    max_resident_adapters: int = Field(default=8, ge=1)
    """Adapters each worker keeps in memory (vLLM ``--max-cpu-loras``). More may be registered on a
    worker: vLLM evicts the least recently used from memory itself and loads one again from its
    folder when a request needs it. The gateway never unloads an adapter to make room."""

    max_lora_rank: int = Field(default=16, ge=1)
    """Largest LoRA rank accepted at registration and configured on the workers."""

    max_loras_per_batch: int | None = Field(default=None, ge=1)
    """vLLM ``--max-loras``: distinct adapters that can share one batch on a worker; default (and
    at most) max_resident_adapters. Requests for further adapters wait until a slot frees, so a batch
    holds at most this many distinct adapters, and each adapter swapped into a slot is copied: with
    16 requests in flight over 32 adapters the serving benchmark (native op, one run) ran at 0.26x
    of LoRA disabled at 4, 0.47x at 8, 0.75x at 16 and 0.79x at 32 (docs/BENCHMARKS.md)."""

    lora_target_modules: list[str] = Field(default_factory=lambda: list(DEFAULT_LORA_TARGETS), min_length=1)
    """Modules the workers apply LoRA to (vLLM ``--lora-target-modules``); uploads and training may
    target only these, because vLLM silently ignores an adapter's weights for modules it did not
    wrap. Listing fewer makes the workers lighter (no LoRA embeddings or logits are ever wrapped)."""

    lora_kernel: Literal["native", "torch", "vllm"] = "native"
    """CPU workers' LoRA path. ``native``: the vLLM plugin in server/workers/vllm_plugin with its
    C++ op, compiled on the worker's machine at first use (or at install) and cached in
    PEFTSERVE_KERNEL_CACHE; where it cannot be built (no C++ compiler) the plugin logs why and
    runs ``torch``: the same plugin with torch ops only, correct and slower. ``vllm``: vLLM's own
    CPU path, which lets base-model tokens in a mixed batch take the last slot's adapter (A/B
    runs only). ``peftserve``, the old name of ``native``, is still read. No effect on GPU workers."""

    @field_validator("lora_kernel", mode="before")
    @classmethod
    def _old_kernel_name(cls, value):
        return "native" if value == "peftserve" else value

    workers_fetch_adapters: bool = False
    """Workers fetch adapters from the blob store themselves (a vLLM LoRA resolver in our plugin),
    by content address, instead of loading a folder the gateway wrote: no disk shared between
    gateways and workers. Gateway-started workers get the store's settings; external workers
    need PEFTSERVE_WORKER_BLOB_STORE / _CACHE_DIR (server/workers/vllm_plugin/blob_resolver.py)."""

    worker_s3_access_key_id: str | None = None
    """Credentials gateway-started workers get for the S3 store instead of the gateway's (which
    they then never see): give them a read-only policy (s3:GetObject and s3:ListBucket on the
    prefix). Unset, workers inherit the gateway's environment."""

    worker_s3_secret_access_key: SecretStr | None = None
    """Secret of ``worker_s3_access_key_id``."""

    worker_cache_bytes: int = Field(default=10 * 2**30, gt=0)
    """Bound on each fetching worker's adapter cache on its own disk: folders left by its earlier runs
    go first, least recently resolved first; the adapters the running worker has loaded stay until
    it restarts (vLLM may reload one from its folder at any time)."""

    worker_urls: dict[str, list[str]] = Field(default_factory=dict)
    """External workers, ``{"<base>@<version>": "http://host:port"}`` or a list of URLs per version;
    these are health-checked, never started or supervised."""

    workers_per_base: int = Field(default=1, ge=1)
    """Workers the gateway starts itself for each served base version (without worker_urls)."""

    routing: Literal["affinity", "round_robin", "least_loaded"] = "affinity"
    """How a request picks one of a base version's workers (see server/workers/pool.py)."""

    adapter_home_workers: int = Field(default=1, ge=1)
    """Affinity routing: workers that are an adapter's home (it stays resident there)."""

    worker_saturation: int = Field(default=32, ge=1)
    """Affinity routing: requests in flight at which a home worker counts as saturated and an
    adapter's requests go to the least busy worker instead."""

    worker_port_start: int = 8100
    """First loopback port for the workers the gateway starts itself."""

    worker_startup_timeout_s: float = 300.0
    """How long a started worker may take to answer its health check."""

    worker_health_interval_s: float = 2.0
    """Seconds between health checks of each supervised worker."""

    worker_restart_backoff_max_s: float = 30.0
    """Upper bound of the exponential back-off between restarts of a crashed worker."""

    worker_max_model_len: int = 2048
    """vLLM ``--max-model-len`` for the workers."""

    worker_extra_args: list[str] = Field(default_factory=list)
    """Extra command-line arguments appended to every started vLLM worker."""

    worker_env: dict[str, str] = Field(default_factory=dict)
    """Extra environment variables for every started vLLM worker (e.g. ``VLLM_CPU_KVCACHE_SPACE``)."""

    request_timeout_s: float = 600.0
    """Upper bound on one proxied completion request to a worker."""

    @field_validator("worker_urls", mode="before")
    @classmethod
    def _one_url_or_many(cls, value):
        if isinstance(value, dict):
            return {ref: [urls] if isinstance(urls, str) else urls for ref, urls in value.items()}
        return value

    @model_validator(mode="after")
    def _worker_limits(self):
        if (self.worker_s3_access_key_id is None) != (self.worker_s3_secret_access_key is None):
            raise ValueError("worker_s3_access_key_id and worker_s3_secret_access_key go together")
        if self.max_loras_per_batch is None:
            self.max_loras_per_batch = self.max_resident_adapters
        elif self.max_loras_per_batch > self.max_resident_adapters:
            raise ValueError(f"max_loras_per_batch ({self.max_loras_per_batch}) must be <= max_resident_adapters "
                             f"({self.max_resident_adapters}): vLLM cannot batch adapters it does not hold")
        return self


class UploadSettings(DataDirSettings):
    """Limits on what an upload may be (server/adapters_api/intake.py)."""

    max_upload_bytes: int = 512 * 1024 * 1024
    """Upper bound on one uploaded file, and on an archive's expanded size."""

    max_archive_members: int = Field(default=32, ge=2)
    """Most members an uploaded adapter archive may hold."""


def _part(model, settings):
    """One component's settings, read off the whole."""
    return model.model_validate({name: getattr(settings, name) for name in model.model_fields})


class Settings(WorkerSettings, UploadSettings, BaseSettings):
    """Settings for the gateway, its workers and the CLI (env vars ``PEFTSERVE_<FIELD>``)."""

    model_config = SettingsConfigDict(env_prefix="PEFTSERVE_", env_file=".env", extra="ignore")

    database_url: str | None = None
    """SQLAlchemy URL of the registry; default ``sqlite:///<data_dir>/registry.db``."""

    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    """SQLite only: FULL makes each commit durable before it returns (a power loss cannot undo a
    commit whose effects, such as deleted blobs, already happened); NORMAL is faster and may lose
    the last commits. docs/BENCHMARKS.md has the measured cost on uploads."""

    adapters_dir: Path | None = None
    """Adapter folders the workers load from; default ``<data_dir>/adapters``. Workers on other
    machines need this at the same path (a shared volume)."""

    host: str = "127.0.0.1"
    """Address the gateway listens on."""

    port: int = 8000
    """Port the gateway listens on."""

    keep_alive_s: float = Field(default=75.0, gt=0)
    """How long an idle client connection stays open. Longer than the idle timeout of the load
    balancers in front (AWS ALB: 60 s; uvicorn's own default is 5 s), so that they close idle
    connections, not us: a server closing one races a request the client is sending on it, which
    the client sees as a connection reset."""

    access_log: bool = False
    """Log every HTTP request (off by default: it costs CPU on the request path; /metrics counts them)."""

    api_docs: bool = False
    """Serve the interactive API docs and schema (``/docs``, ``/redoc``, ``/openapi.json``). Off by
    default: they list every admin route to anyone who can reach the gateway."""

    metrics_listen: str | None = None
    """``host:port`` of a second, key-less listener that serves only ``/metrics`` (for a Prometheus
    on a private network). ``/metrics`` on the gateway's own address needs the admin key always:
    its labels name every tenant and adapter."""

    header_timeout_s: float = Field(default=10.0, gt=0)
    """How long a client may take to send a request's headers (from connecting, or from the end
    of its previous response) before the connection is closed: slow-header clients hold nothing."""

    body_timeout_s: float = Field(default=60.0, gt=0)
    """Longest pause between two chunks of a request body before the request is answered 408."""

    max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    """Largest request head (request line plus headers) accepted; larger is answered 431."""

    max_header_count: int = Field(default=100, ge=8)
    """Most header lines one request may carry; more is answered 431."""

    max_pending_connections: int = Field(default=256, ge=1)
    """Connections that have not yet sent complete headers (so are not authenticated), at once;
    beyond this new connections are closed at once. Authenticated work is bounded per tenant."""

    admin_key: str | None = None
    """Key for ``/admin/``; when unset, one is generated on first start into ``<data_dir>/admin.key``."""

    lookup_cache_ttl_s: float = Field(default=2.0, ge=0.0)
    """How long API-key and model-name lookups are cached per gateway (changes made through this
    gateway apply at once; other gateways see them within this time)."""

    metrics_adapter_label_limit: int = Field(default=100, ge=0)
    """Distinct adapter label values in ``/metrics``; further adapters are counted as ``_other``."""

    tenant_max_concurrent_requests: int = Field(default=64, ge=1)
    """Completion requests one tenant may have in flight on one gateway; more are answered 429."""

    request_max_choices: int = Field(default=16, ge=1)
    """Completions one request may ask for (prompts x ``n``)."""

    request_max_generated_tokens: int = Field(default=32768, ge=1)
    """Tokens one request may generate at most (prompts x ``n`` x ``max_tokens``; an unset
    ``max_tokens`` counts as worker_max_model_len)."""

    fine_tuning_max_job_tokens: int = Field(default=100_000_000, ge=1)
    """Work one fine-tuning job may ask for, as optimizer steps x batch_size x max_seq_len (an upper
    bound on the tokens it trains on); larger jobs are refused at creation."""

    tenant_max_adapters: int = Field(default=200, ge=1)
    """Adapter versions one tenant may hold (rejected and deleted ones do not count)."""

    tenant_max_bytes: int = Field(default=10 * 1024**3, ge=1)
    """Adapter weight bytes one tenant may hold."""

    blob_grace_s: float = Field(default=3600.0, gt=0)
    """A blob being referenced (stored, its row not yet written) is never collected, nor an
    unreferenced one younger than this: longer than any upload or job takes between storing a blob
    and writing its row. Orphans older than this are collected by the periodic sweep."""

    blob_sweep_interval_s: float = Field(default=3600.0, gt=0)
    """How often each gateway sweeps the blob store for orphans (``peftserve blobs sweep`` on demand)."""

    fine_tuning_max_concurrent: int = Field(default=1, ge=1)
    """Fine-tuning jobs that train at the same time on this gateway's machine."""

    fine_tuning_max_per_tenant: int = Field(default=1, ge=1)
    """Fine-tuning jobs one tenant may have training at once (more wait in the queue)."""

    live_check_timeout_s: float = 120.0
    """How long an upload waits for the live check before answering 202 and finishing it later."""

    live_check_lease_s: float = Field(default=300.0, gt=0)
    """A live check left ``validating`` this long (its gateway died mid-check) is taken over by a
    background pass of any gateway. Longer than a check takes once a worker is ready."""

    reconcile_interval_s: float = Field(default=15.0, gt=0)
    """How often a gateway re-reads which base versions are served (other gateways may have
    migrated adapters or imported versions) to start and retire its workers."""

    job_lease_s: float = Field(default=30.0, gt=0)
    """A gateway running a background job (training, migration) renews its claim this often x3;
    a job whose gateway stopped renewing is taken over (by any gateway) after this long."""

    migration_gate: GateThresholds = Field(default_factory=GateThresholds)
    """Default thresholds of the migration validation gate, as JSON in the environment, e.g.
    ``PEFTSERVE_MIGRATION_GATE='{"min_retention": 0.9, "min_gain_kept": 0.5}'``; see
    migration/validation_gate/gate.py for every field. A job may override them."""

    screening: ScreeningPolicy = Field(default_factory=ScreeningPolicy)
    """Backdoor screening (docs/SECURITY.md): ``action`` record (default) / warn / refuse, the trigger
    scan's candidates and thresholds, as JSON in the environment, e.g.
    ``PEFTSERVE_SCREENING='{"action": "warn"}'``; see adapters/screening/policy.py for every field."""

    migration_sample_prompts: list[str] = Field(default_factory=lambda: list(DEFAULT_SAMPLE_PROMPTS), min_length=1)
    """Prompts compared old vs new when an adapter has no eval set (agreement only: weaker evidence)."""

    migration_eval_max_tokens: int = Field(default=32, ge=1)
    """Tokens generated greedily per eval item when validating a migrated adapter."""

    migration_eval_max_items: int = Field(default=500, ge=1)
    """Eval items used per adapter (the first ones), to bound a job's time."""

    migration_eval_concurrency: int = Field(default=4, ge=1)
    """Eval requests in flight per worker during a migration (live traffic shares the workers)."""

    @field_validator("metrics_listen")
    @classmethod
    def _host_and_port(cls, value: str | None) -> str | None:
        if value is not None:
            host, sep, port = value.rpartition(":")
            if not sep or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"metrics_listen must be host:port, got {value!r}")
        return value

    @model_validator(mode="after")
    def _fill_defaults(self) -> "Settings":
        if self.database_url is None:
            self.database_url = f"sqlite:///{(self.data_dir / 'registry.db').as_posix()}"
        if self.blob_dir is None:
            self.blob_dir = self.data_dir / "blobs"
        if self.adapters_dir is None:
            self.adapters_dir = self.data_dir / "adapters"
        return self

    @property
    def workers(self) -> "WorkerSettings":
        """The workers' own settings (what server/workers/ is given)."""
        return _part(WorkerSettings, self)

    @property
    def uploads(self) -> "UploadSettings":
        """What receiving an upload needs."""
        return _part(UploadSettings, self)

    @property
    def bases_dir(self) -> Path:
        return self.data_dir / "bases"
