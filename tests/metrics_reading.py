"""Read values out of the gateway's Prometheus text exposition."""

import httpx
from prometheus_client.parser import text_string_to_metric_families


def metric_sum(url: str, name: str, **labels) -> float:
    """From a gateway (whose /metrics needs the admin key)."""
    from tests.gateway_harness import ADMIN_KEY

    return prometheus_sum(url, name, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, **labels)


def prometheus_sum(url: str, name: str, headers: dict | None = None, **labels) -> float:
    resp = httpx.get(f"{url}/metrics", headers=headers, timeout=30)
    resp.raise_for_status()
    text = resp.text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total
