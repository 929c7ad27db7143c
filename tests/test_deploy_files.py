"""Static checks of the deployment files (no Docker engine or Kubernetes cluster runs here, so
they were never started by these tests): docker-compose.yml against the Compose
specification's schema, the Kubernetes manifests against Kubernetes' own schemas, and both
against the code: every PEFTSERVE_ variable they set is a real setting, every worker or
scrape target is a service, every metric on the Grafana dashboard exists."""

import json
import re
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from prometheus_client import CollectorRegistry

from server.workers.vllm_plugin.blob_resolver import CACHE_BYTES_ENV, CACHE_DIR_ENV, STORE_ENV
from server.metrics import GatewayMetrics
from server.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_SCHEMA = ROOT / ".cache" / "compose-spec" / "compose-spec.json"
SETTINGS_VARS = {f"PEFTSERVE_{name.upper()}" for name in Settings.model_fields}
WORKER_VARS = {STORE_ENV, CACHE_DIR_ENV, CACHE_BYTES_ENV}  # read by our plugin inside a worker


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def kubernetes_documents() -> list[dict]:
    folder = ROOT / "deploy" / "kubernetes"
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    return [doc for name in kustomization["resources"] for doc in yaml.safe_load_all((folder / name).read_text())
            if doc]


def test_compose_file_follows_the_compose_specification():
    assert COMPOSE_SCHEMA.is_file(), "run `make test`: deploy/install-test-services.sh fetches the schema"
    validator = jsonschema.Draft201909Validator(json.loads(COMPOSE_SCHEMA.read_text()))
    validator.validate(compose())
    with pytest.raises(jsonschema.ValidationError):  # the check does catch mistakes
        validator.validate({**compose(), "services": {"x": {"image": 3}}})


def test_compose_services_reference_each_other_and_real_settings():
    spec = compose()
    services = spec["services"]
    hosts = set(services) | {alias for s in services.values()
                             for net in (s.get("networks") or {}).values() for alias in (net or {}).get("aliases", [])}
    env = services["gateway-a"]["environment"]
    for name in ("gateway-a", "gateway-b", "base-import"):
        used = {k for k in services[name]["environment"] if k.startswith("PEFTSERVE_")}
        assert used <= SETTINGS_VARS, used - SETTINGS_VARS
    urls = [u for group in json.loads(env["PEFTSERVE_WORKER_URLS"]).values() for u in group]
    for profile in ("cpu", "gpu"):  # each profile brings workers under the names the gateways use
        in_profile = {alias for n, s in services.items() if profile in s.get("profiles", [])
                      for alias in [n, *[a for net in (s.get("networks") or {}).values() for a in net["aliases"]]]}
        assert {re.match(r"http://([^:]+):", u)[1] for u in urls} <= in_profile
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {t.split(":")[0] for job in prometheus["scrape_configs"] for c in job["static_configs"]
               for t in c["targets"]}
    assert targets <= hosts
    assert "postgresql+psycopg://" in env["PEFTSERVE_DATABASE_URL"] and env["PEFTSERVE_BLOB_STORE"] == "s3"


def test_grafana_dashboard_shows_only_metrics_the_gateway_exports():
    registry = GatewayMetrics(10).registry
    assert isinstance(registry, CollectorRegistry)
    exported = {sample_name for metric in registry.collect() for sample_name in
                {metric.name, f"{metric.name}_total", f"{metric.name}_bucket", f"{metric.name}_count",
                 f"{metric.name}_sum"}}
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "peftserve.json").read_text())
    used = {m for panel in dashboard["panels"] for target in panel["targets"]
            for m in re.findall(r"peftserve_[a-z_]+", target["expr"])}
    assert used and used <= exported, used - exported
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("requests", "latency", "tokens", "adapter", "resident", "migration"):
        assert topic in titles


def test_kubernetes_manifests_validate_against_kubernetes_schemas():
    documents = kubernetes_documents()
    kinds = {d["kind"] for d in documents}
    assert {"Deployment", "StatefulSet", "HorizontalPodAutoscaler", "Secret", "ConfigMap", "ServiceMonitor"} <= kinds
    version = kubernetes_validate.latest_version()
    for doc in documents:
        if doc["kind"] == "ServiceMonitor":  # a CRD: no schema ships with Kubernetes; check its shape
            assert doc["apiVersion"] == "monitoring.coreos.com/v1" and doc["spec"]["endpoints"][0]["path"] == "/metrics"
            continue
        kubernetes_validate.validate(doc, version, strict=True)
    with pytest.raises(kubernetes_validate.ValidationError):  # the check does catch mistakes
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
                                      "spec": {"ports": [{"port": "eighty"}]}}, version, strict=True)


def test_kubernetes_gateway_probes_settings_and_gpu_workers():
    documents = {d["kind"]: d for d in kubernetes_documents()}
    gateway = documents["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/ready"
    worker = documents["StatefulSet"]["spec"]["template"]["spec"]["containers"][0]
    assert worker["resources"]["requests"]["nvidia.com/gpu"] == "1"
    config = {**documents["ConfigMap"]["data"], **documents["Secret"]["stringData"]}
    used = {k for k in config if k.startswith("PEFTSERVE_")} - WORKER_VARS
    assert used <= SETTINGS_VARS, used - SETTINGS_VARS
    Settings.model_validate({k.removeprefix("PEFTSERVE_").lower(): v for k, v in config.items()
                             if k in used and k != "PEFTSERVE_WORKER_URLS"})
    assert documents["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == documents["Deployment"][
        "metadata"]["name"]


def test_workers_need_the_gateways_key_and_metrics_are_scraped_keyless_off_the_api_port():
    services = compose()["services"]
    key = services["gateway-a"]["environment"]["PEFTSERVE_WORKER_API_KEY"]
    assert key.startswith("${PEFTSERVE_WORKER_API_KEY")
    for name, service in services.items():
        if name.startswith("worker"):
            assert service["environment"]["VLLM_API_KEY"] == key and "ports" not in service
    listen_port = services["gateway-a"]["environment"]["PEFTSERVE_METRICS_LISTEN"].rsplit(":", 1)[1]
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    gateway_job = next(j for j in prometheus["scrape_configs"] if j["job_name"] == "peftserve-gateway")
    assert {t.split(":")[1] for c in gateway_job["static_configs"] for t in c["targets"]} == {listen_port}

    documents = kubernetes_documents()
    worker = next(d for d in documents if d["kind"] == "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    api_key = next(e for e in worker["env"] if e["name"] == "VLLM_API_KEY")
    assert api_key["valueFrom"]["secretKeyRef"]["key"] == "PEFTSERVE_WORKER_API_KEY"
    secret = next(d for d in documents if d["kind"] == "Secret")
    assert "PEFTSERVE_WORKER_API_KEY" in secret["stringData"]
    config = next(d for d in documents if d["kind"] == "ConfigMap")["data"]
    monitors = {d["metadata"]["name"]: d for d in documents if d["kind"] == "ServiceMonitor"}
    assert monitors["peftserve-gateway"]["spec"]["endpoints"][0]["port"] == "metrics"
    gateway = next(d for d in documents if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    assert str(ports["metrics"]) == config["PEFTSERVE_METRICS_LISTEN"].rsplit(":", 1)[1]


def test_the_fleet_shares_only_the_database_and_the_bucket():
    """No volume mounted by two containers or pods; base models in the images (registered in place);
    workers fetch adapters from the gateways' bucket with credentials of their own."""
    spec = compose()
    services = spec["services"]
    assert set(spec["volumes"]) == {"pgdata", "minio"}
    mounts = {name: [v.split(":")[0] for v in s.get("volumes", []) if not v.startswith("./")]
              for name, s in services.items()}
    assert {name for name, m in mounts.items() if m} == {"postgres", "minio"}
    gateway = services["gateway-a"]["environment"]
    assert gateway["PEFTSERVE_WORKERS_FETCH_ADAPTERS"] == "true" and "PEFTSERVE_ADAPTERS_DIR" not in gateway
    in_place = services["base-import"]["command"]
    assert "--in-place" in in_place
    dockerfile = (ROOT / "deploy" / "docker" / "Dockerfile").read_text()
    assert f"DEMO_BASE={in_place[3]}" in dockerfile and "AS gpu-worker" in dockerfile
    for name, service in services.items():
        if not name.startswith("worker"):
            continue
        env, command = service["environment"], service["command"]
        assert command[command.index("--model") + 1] == in_place[3]
        store = json.loads(env[STORE_ENV])
        assert (store["kind"], store["bucket"], store["endpoint_url"]) == (
            "s3", gateway["PEFTSERVE_S3_BUCKET"], gateway["PEFTSERVE_S3_ENDPOINT_URL"])
        assert store["spool_dir"].startswith(env[CACHE_DIR_ENV]) and env[CACHE_DIR_ENV] in service["tmpfs"]
        assert env["AWS_ACCESS_KEY_ID"] != gateway["AWS_ACCESS_KEY_ID"]  # the read-only user
        assert f"user add store {env['AWS_ACCESS_KEY_ID']} {env['AWS_SECRET_ACCESS_KEY']}" in \
            services["minio-bucket"]["entrypoint"][-1] and "policy attach store readonly" in \
            services["minio-bucket"]["entrypoint"][-1]
    assert services["worker-gpu-1"]["build"]["target"] == "gpu-worker"  # vLLM's image plus our plugin

    documents = kubernetes_documents()
    assert not [d for d in documents if d["kind"] == "PersistentVolumeClaim"]
    pods = [d["spec"]["template"]["spec"] for d in documents if d["kind"] in ("Deployment", "StatefulSet", "Job")]
    assert pods and not [v for p in pods for v in p.get("volumes", []) if "persistentVolumeClaim" in v]
    config = next(d for d in documents if d["kind"] == "ConfigMap")["data"]
    store = json.loads(config[STORE_ENV])
    assert store["bucket"] == config["PEFTSERVE_S3_BUCKET"] and config["PEFTSERVE_WORKERS_FETCH_ADAPTERS"] == "true"
    worker = next(d for d in documents if d["kind"] == "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    assert {e["name"] for e in worker["env"]} >= {STORE_ENV, CACHE_DIR_ENV}
    assert [s["secretRef"]["name"] for s in worker["envFrom"]] == ["peftserve-worker-store"]  # not the gateway's
    assert worker["args"][worker["args"].index("--model") + 1] == in_place[3]
