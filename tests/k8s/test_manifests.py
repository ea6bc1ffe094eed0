"""The Kubernetes manifests (k8s/): the kustomization rendered, every object validated strictly
against the schemas of a pinned Kubernetes version (unknown fields fail), and the shape issue 14
asks for: stateless brokers on a shared store, PostgreSQL with its own volume, every strategy
partition a StatefulSet of replicas with its own index volume, headless Service and
PodDisruptionBudget, TLS and the write token on everywhere."""

from __future__ import annotations

import copy
import importlib.util
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
KUBERNETES_VERSION = "1.33.0"
# the kustomization fields render() understands; any other makes the test fail, not pass silently
KUSTOMIZATION_KEYS = {"apiVersion", "kind", "namespace", "resources", "configMapGenerator", "images"}
CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "ClusterRole", "ClusterRoleBinding", "StorageClass"}
STRATEGIES = ("lexical", "semantic", "attribute", "memory")


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("k8s_generate", K8S / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    pod = obj.get("spec", {}).get("template", {}).get("spec", {})
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def _set_image(obj: dict[str, Any], images: list[dict[str, str]]) -> None:
    for container in _containers(obj):
        name = container["image"].split(":")[0]
        for image in images:
            if image["name"] == name:
                container["image"] = f"{image.get('newName', name)}:{image['newTag']}"


def render(folder: Path) -> list[dict[str, Any]]:
    """What `kustomize build folder` gives for the fields in KUSTOMIZATION_KEYS: every resource
    file's objects in the namespace, generated ConfigMaps, image tags set."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KUSTOMIZATION_KEYS
    assert not unknown, f"render() does not understand kustomization fields {sorted(unknown)}: teach it"
    objects = [doc for name in kustomization["resources"]
               for doc in yaml.safe_load_all((folder / name).read_text()) if doc is not None]
    for generator in kustomization.get("configMapGenerator", []):
        options = generator.get("options", {})
        objects.append({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": generator["name"], "labels": options.get("labels", {})},
                        "data": {f: (folder / f).read_text() for f in generator.get("files", [])}})
    for obj in objects:
        if obj["kind"] not in CLUSTER_SCOPED and "namespace" in kustomization:
            obj["metadata"]["namespace"] = kustomization["namespace"]
        _set_image(obj, kustomization.get("images", []))
    return objects


RENDERED = render(K8S)


def _named(kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in RENDERED if o["kind"] == kind}


def test_generated_manifests_are_current(tmp_path: Path) -> None:
    for path in _generator().generate(tmp_path):
        committed = K8S / path.name
        assert committed.read_text() == path.read_text(), f"{committed} is stale: run python k8s/generate.py"


@pytest.mark.parametrize("obj", RENDERED, ids=[f"{o['kind']}/{o['metadata']['name']}" for o in RENDERED])
def test_every_object_is_valid_strictly(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(("path", "value"), [
    (("spec", "replica"), 2),  # a misspelt field
    (("spec", "template", "spec", "containers", 0, "arg"), ["broker"]),  # a misspelt field deep inside
    # a gRPC probe's port must be a number
    (("spec", "template", "spec", "containers", 0, "readinessProbe", "grpc", "port"), "health"),
    (("spec", "replicas"), "two"),  # the wrong type
])
def test_strict_validation_fails_a_broken_manifest(path: tuple[Any, ...], value: Any) -> None:
    broken = copy.deepcopy(_named("Deployment")["ltrr-broker"])
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_brokers_are_a_stateless_deployment_on_the_shared_store() -> None:
    assert "ltrr-broker" not in _named("StatefulSet")
    broker = _named("Deployment")["ltrr-broker"]
    assert broker["spec"]["replicas"] >= 2
    pod = broker["spec"]["template"]["spec"]
    assert not any("persistentVolumeClaim" in v for v in pod["volumes"])
    (container,) = pod["containers"]
    args = container["args"]
    store = {e["name"]: e for e in container["env"]}["LTRR_STORE_URL"]
    assert store["valueFrom"]["secretKeyRef"] == {"name": "ltrr-store", "key": "url"}
    assert args[args.index("--store") + 1] == "$(LTRR_STORE_URL)"


def test_postgres_is_a_stateful_set_with_a_volume_and_a_secret_password() -> None:
    postgres = _named("StatefulSet")["ltrr-postgres"]
    assert [c["metadata"]["name"] for c in postgres["spec"]["volumeClaimTemplates"]] == ["data"]
    (container,) = postgres["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "ltrr-postgres"
    assert postgres["spec"]["serviceName"] in _named("Service")


def _labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _partitions() -> dict[str, list[dict[str, Any]]]:
    """strategy -> its partitions' StatefulSets, by partition number."""
    out: dict[str, list[dict[str, Any]]] = {}
    for obj in sorted(_named("StatefulSet").values(), key=lambda o: o["metadata"]["name"]):
        labels = obj["metadata"]["labels"]
        if "strategy" in labels:
            out.setdefault(labels["strategy"], []).append(obj)
    return out


def test_every_strategy_has_two_partitions_of_two_replicas_with_their_own_index_volume() -> None:
    partitions = _partitions()
    assert sorted(partitions) == sorted(STRATEGIES)
    for strategy, sets in partitions.items():
        assert [s["metadata"]["labels"]["partition"] for s in sets] == ["0", "1"], strategy
        for s in sets:
            assert s["spec"]["replicas"] == 2
            claims = {c["metadata"]["name"] for c in s["spec"]["volumeClaimTemplates"]}
            assert "index" in claims and ("state" in claims) == (strategy == "memory")
            args = s["spec"]["template"]["spec"]["containers"][0]["args"]
            assert args[args.index("shard") + 1] == strategy


def test_each_partition_has_a_headless_service_and_a_disruption_budget_of_its_own() -> None:
    services, budgets = _named("Service"), _named("PodDisruptionBudget")
    pods = {name: s["spec"]["template"]["metadata"]["labels"] for name, s in _named("StatefulSet").items()}
    for sets in _partitions().values():
        for s in sets:
            name, labels = s["metadata"]["name"], s["spec"]["template"]["metadata"]["labels"]
            service = services[s["spec"]["serviceName"]]
            assert service["spec"]["clusterIP"] == "None"
            matching = [b for b in budgets.values() if _labels_match(b["spec"]["selector"]["matchLabels"], labels)]
            assert len(matching) == 1, name
            assert matching[0]["spec"]["minAvailable"] == 1
            # the budget covers this partition's pods and no other's
            selector = matching[0]["spec"]["selector"]["matchLabels"]
            assert [n for n, p in pods.items() if _labels_match(selector, p)] == [name]


def test_the_broker_asks_every_replica_of_every_partition() -> None:
    args = _named("Deployment")["ltrr-broker"]["spec"]["template"]["spec"]["containers"][0]["args"]
    flags = dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "--shard")
    expected = {}
    for strategy, sets in _partitions().items():
        for s in sets:
            name, service = s["metadata"]["name"], s["spec"]["serviceName"]
            port = s["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
            expected[f"{strategy}/{s['metadata']['labels']['partition']}"] = ",".join(
                f"{name}-{r}.{service}:{port}" for r in range(s["spec"]["replicas"]))
    assert flags == expected


def test_the_index_job_builds_as_many_partitions_as_are_served() -> None:
    (job,) = _named("Job").values()
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    counts = Counter(len(sets) for sets in _partitions().values())
    assert counts == {int(args[args.index("--partitions") + 1]): len(STRATEGIES)}


def _ltrr_servers() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, container) of every ltrr server: the broker and every shard."""
    return [(o, c) for o in RENDERED if o["kind"] in ("Deployment", "StatefulSet")
            for c in o["spec"]["template"]["spec"]["containers"] if c["image"].startswith("ltrr:")]


def test_tls_and_the_token_are_on_for_every_ltrr_server() -> None:
    servers = _ltrr_servers()
    assert len(servers) == 1 + len(STRATEGIES) * 2
    for obj, container in servers:
        args, name = container["args"], obj["metadata"]["name"]
        volumes = {v["name"]: v for v in obj["spec"]["template"]["spec"]["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        for flag in ("--tls-cert", "--tls-key", "--tls-ca"):
            path = args[args.index(flag) + 1]
            folder = path.rsplit("/", 1)[0]
            assert volumes[mounts[folder]]["secret"]["secretName"] == "ltrr-tls", (name, flag)
        token = {e["name"]: e.get("value") for e in container["env"]}["LTRR_TOKEN_FILE"]
        assert volumes[mounts[token.rsplit("/", 1)[0]]]["secret"]["secretName"] == "ltrr-token", name
        assert "--token-file" not in args  # the token file comes from the environment, never a flag value


def test_probes_use_the_plaintext_health_port_the_server_opens() -> None:
    for obj, container in _ltrr_servers():
        args = container["args"]
        health = int(args[args.index("--health-port") + 1])
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["health"] == health, obj["metadata"]["name"]
        for probe in ("readinessProbe", "startupProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == health, (obj["metadata"]["name"], probe)
