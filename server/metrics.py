"""Prometheus metrics of the gateway, on a registry of its own so every app instance is separate.

Label cardinality is bounded: the first ``label_limit`` distinct tenants and adapters keep
their own label value, later ones are counted under ``_other``; base versions are few.
"""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
OTHER = "_other"


class BoundedLabel:
    def __init__(self, limit: int):
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) < self.limit:
            self._seen.add(value)
            return value
        return OTHER


class GatewayMetrics:
    def __init__(self, label_limit: int):
        self.registry = CollectorRegistry()
        self.tenant_label = BoundedLabel(label_limit)
        self.adapter_label = BoundedLabel(label_limit)
        labels = ("tenant", "adapter", "base_version")
        r = self.registry
        self.requests = Counter("peftserve_requests_total", "Completion requests", (*labels, "endpoint"), registry=r)
        self.errors = Counter("peftserve_request_errors_total", "Failed requests", (*labels, "code"), registry=r)
        self.internal_errors = Counter("peftserve_internal_errors_total", "Requests (any route) that failed with an "
                                       "unhandled error (500)", ("method",), registry=r)
        self.prompt_tokens = Counter("peftserve_prompt_tokens_total", "Prompt tokens", labels, registry=r)
        self.generated_tokens = Counter("peftserve_generated_tokens_total", "Generated tokens", labels, registry=r)
        self.ttft = Histogram("peftserve_time_to_first_token_seconds", "Time to first streamed token", labels,
                              buckets=LATENCY_BUCKETS, registry=r)
        self.latency = Histogram("peftserve_request_latency_seconds", "End-to-end request latency", labels,
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.adapter_loads = Counter("peftserve_adapter_loads_total", "Adapters registered on a worker by this gateway",
                                     ("worker",), registry=r)
        self.adapter_load_seconds = Histogram("peftserve_adapter_load_seconds", "Adapter load latency", ("worker",),
                                              buckets=LATENCY_BUCKETS, registry=r)
        # vLLM keeps the most recently used --max-cpu-loras of them in memory and evicts the rest
        # itself (its own vllm:* metrics show that); this gateway never unloads one to make room.
        self.resident_adapters = Gauge("peftserve_resident_adapters", "Adapters registered per worker", ("worker",),
                                       registry=r)
        self.worker_up = Gauge("peftserve_worker_up", "1 when the worker answers its health check", ("worker",),
                               registry=r)
        self.worker_restarts = Counter("peftserve_worker_restarts_total", "Worker restarts after a crash",
                                       ("worker",), registry=r)
        self.migration_decisions = Counter("peftserve_migration_decisions_total", "Adapters judged by migration "
                                           "jobs", ("from_version", "to_version", "decision"), registry=r)
        self.screening_flagged = Counter("peftserve_screening_flagged_total", "Adapters the backdoor screening "
                                         "flagged (docs/SECURITY.md)", ("stage", "action"), registry=r)
        self.migration_seconds = Histogram("peftserve_migration_adapter_seconds", "Time to judge one adapter in a "
                                           "migration job", ("to_version",), buckets=LATENCY_BUCKETS, registry=r)

    def labels(self, tenant: str, adapter: str, base_version: str) -> dict[str, str]:
        return {"tenant": self.tenant_label(tenant), "adapter": self.adapter_label(adapter),
                "base_version": base_version}


def start_metrics_listener(listen: str | None, registry: CollectorRegistry):
    """A key-less ``/metrics`` on its own ``host:port`` (e.g. a private network Prometheus scrapes),
    served from a thread by prometheus-client; returns the server (``.shutdown()``) or None."""
    if not listen:
        return None
    host, _, port = listen.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1", registry=registry)
    return server
