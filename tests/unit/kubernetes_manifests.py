"""Reading rendered Kubernetes manifests as the kubelet would: pods, containers, their
environment, their mounts, and what a selector picks; and the facts of the code and of the
compose deployment they are checked against."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path, PurePosixPath
from unittest import mock

import yaml
from pydantic import ValidationError

ROOT = Path(__file__).parents[2]
WORKLOADS = ("Deployment", "StatefulSet")
WRITABLE_MODES = {"ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"}
VARIABLE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def settings_classes() -> dict[tuple[str, ...], type]:
    """Each csr container command and the settings class of the service it starts."""
    from services.generator.settings import GeneratorSettings
    from services.reward.settings import RewardSettings
    from services.trainer.settings import TrainerSettings

    return {
        ("csr", "reward", "serve"): RewardSettings,
        ("csr", "generate"): GeneratorSettings,
        ("csr", "train"): TrainerSettings,
    }


def image_user() -> tuple[int, str]:
    """(uid, name) of the user both service images run as, read from their Dockerfiles."""
    users = {
        m.groups()
        for name in ("Dockerfile.gpu", "Dockerfile.reward")
        for m in re.finditer(
            r"useradd --create-home --uid (\d+) (\w+)", (ROOT / "docker" / name).read_text()
        )
    }
    assert len(users) == 1, f"the Dockerfiles create different users: {users}"
    uid, name = users.pop()
    return int(uid), name


# -- reading the documents -------------------------------------------------------------------
def named(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_specs(docs: list[dict]) -> dict[str, dict]:
    return {
        d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in docs if d["kind"] in WORKLOADS
    }


def containers(docs: list[dict]) -> list[tuple[str, dict, dict]]:
    """(workload name, pod spec, container) of every container, init containers included."""
    return [
        (name, pod, c)
        for name, pod in pod_specs(docs).items()
        for c in pod.get("initContainers", []) + pod["containers"]
    ]


def csr_containers(docs: list[dict]) -> list[tuple[str, dict, dict, type | None]]:
    """The containers running a `csr` command, with their service's settings class."""
    classes = settings_classes()
    return [
        (name, pod, c, classes.get(tuple(c["command"])))
        for name, pod, c in containers(docs)
        if c.get("command", [""])[0] == "csr"
    ]


def environment(docs: list[dict], container: dict) -> dict[str, str]:
    """The container's environment as the kubelet builds it: values from ConfigMaps and
    Secrets, and $(VAR) replaced where VAR was defined before it."""
    maps = {n: d.get("data", {}) for n, d in named(docs, "ConfigMap").items()}
    secrets = {
        n: {k: base64.b64decode(v).decode() for k, v in d.get("data", {}).items()}
        for n, d in named(docs, "Secret").items()
    }
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(maps.get(source["configMapRef"]["name"], {}))
        if "secretRef" in source:
            env.update(secrets.get(source["secretRef"]["name"], {}))
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = VARIABLE.sub(lambda m: env.get(m[1], m[0]), var["value"])
        elif ref := var.get("valueFrom", {}).get("configMapKeyRef"):
            env[var["name"]] = maps.get(ref["name"], {}).get(ref["key"], "")
        elif ref := var.get("valueFrom", {}).get("secretKeyRef"):
            env[var["name"]] = secrets.get(ref["name"], {}).get(ref["key"], "")
    return env


def settings_of(docs: list[dict], container: dict, cls: type):
    """The service's settings as the container would read them (raises ValidationError)."""
    with mock.patch.dict(os.environ, environment(docs, container), clear=True):
        return cls()


def settings_or_none(docs: list[dict], container: dict, cls: type | None):
    """The settings, or None where variable_problems reports why there are none."""
    try:
        return settings_of(docs, container, cls) if cls is not None else None
    except ValidationError:
        return None


def mounts(pod: dict, container: dict) -> dict[str, tuple[dict, dict]]:
    """mountPath -> (volumeMount, volume) of a container."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    return {
        m["mountPath"]: (m, volumes.get(m["name"], {})) for m in container.get("volumeMounts", [])
    }


def mount_of(pod: dict, container: dict, path: str) -> tuple[str, dict, dict] | None:
    """The mount a path lies on: (mountPath, volumeMount, volume), the deepest one."""
    found = [
        (p, m, v)
        for p, (m, v) in mounts(pod, container).items()
        if PurePosixPath(p) == PurePosixPath(path)
        or PurePosixPath(p) in PurePosixPath(path).parents
    ]
    return max(found, key=lambda f: len(f[0])) if found else None


def read_only(pod: dict, container: dict, path: str) -> bool:
    """Whether `path` lies on a mount that is read-only by the pod's own say (an access mode
    alone does not stop a writable mount)."""
    found = mount_of(pod, container, path)
    return found is not None and bool(
        found[1].get("readOnly") or found[2].get("persistentVolumeClaim", {}).get("readOnly")
    )


def writable(docs: list[dict], pod: dict, container: dict, path: str) -> bool:
    """Whether the container can write under `path` with a read-only root filesystem."""
    found = mount_of(pod, container, path)
    if found is None:
        return False
    _, mount, volume = found
    if mount.get("readOnly"):
        return False
    if "emptyDir" in volume:
        return True
    claim = volume.get("persistentVolumeClaim")
    if claim is None:
        return False
    spec = named(docs, "PersistentVolumeClaim").get(claim["claimName"], {}).get("spec", {})
    return not claim.get("readOnly") and bool(WRITABLE_MODES & set(spec.get("accessModes", [])))


def selects(selector: dict, labels: dict) -> bool:
    """Whether a label selector (matchLabels and In-expressions, or a plain map) picks labels."""
    plain = {k: v for k, v in selector.items() if k not in ("matchLabels", "matchExpressions")}
    wanted = {**plain, **selector.get("matchLabels", {})}
    if any(labels.get(k) != v for k, v in wanted.items()):
        return False
    for e in selector.get("matchExpressions", []):
        if e["operator"] != "In" or labels.get(e["key"]) not in e["values"]:
            return False
    return True


def pods_selected(docs: list[dict], selector: dict) -> set[str]:
    return {
        d["metadata"]["name"]
        for d in docs
        if d["kind"] in WORKLOADS
        and selects(selector, d["spec"]["template"]["metadata"].get("labels", {}))
    }


def load_compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
