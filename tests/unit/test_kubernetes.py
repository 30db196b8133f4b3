"""deploy/kubernetes against the code, without a cluster: the example overlay is rendered with
kustomize, checked against the Kubernetes schemas (kubernetes-validate, offline), and held to
what the code needs (commands, settings, probes, references, security, GPUs, wiring).

Every check also runs on a broken copy of the manifests, which it must reject.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from tests.unit import kubernetes_checks as checks
from tests.unit import kubernetes_manifests as manifests

KUBE = manifests.ROOT / "deploy" / "kubernetes"
OVERLAY = "overlays/example"
# The oldest Kubernetes whose kubectl has kustomize 5, and the newest the schemas know.
SCHEMA_VERSIONS = ("1.27", "1.37")


def kustomize_command() -> tuple[list[str] | None, str]:
    """(argv that renders a kustomization folder, or None; what was found)."""
    seen = []
    for argv, ask in (
        (["kustomize", "build"], ["kustomize", "version"]),
        (["kubectl", "kustomize"], ["kubectl", "version", "--client"]),
    ):
        if shutil.which(argv[0]) is None:
            continue
        said = subprocess.run(ask, check=False, capture_output=True, text=True, timeout=60).stdout
        major = re.search(r"(?:Kustomize Version: |^|kustomize/)v(\d+)\.", said, re.MULTILINE)
        if major and int(major[1]) >= 5:
            return argv, said
        seen.append(f"{argv[0]} ({said.strip() or 'no version'})")
    return None, ", ".join(seen) or "neither kustomize nor kubectl"


def render(tree: Path, folder: str) -> subprocess.CompletedProcess:
    argv, found = kustomize_command()
    if argv is None:
        message = (
            f"kustomize 5 is needed to render deploy/kubernetes (found: {found}); "
            "install kustomize 5 or kubectl >= 1.27"
        )
        if os.environ.get("CSR_REQUIRE_KUBERNETES"):
            pytest.fail(message)
        pytest.skip(message)
    return subprocess.run(
        [*argv, str(tree / folder)], check=False, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A copy of deploy/kubernetes whose overlay has its secrets file, from the example."""
    copied = tmp_path_factory.mktemp("deploy") / "kubernetes"
    shutil.copytree(KUBE, copied, ignore=shutil.ignore_patterns("secrets.env"))
    shutil.copy(copied / OVERLAY / "secrets.env.example", copied / OVERLAY / "secrets.env")
    return copied


@pytest.fixture(scope="module")
def docs(tree) -> list[dict]:
    done = render(tree, OVERLAY)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


@pytest.fixture(scope="module")
def status():
    """status(settings class, path): what that service's own HTTP code answers on path."""
    from fastapi.testclient import TestClient
    from prometheus_client import CollectorRegistry

    from services.generator.observe import GeneratorMetrics, serve_health
    from services.generator.settings import GeneratorSettings
    from services.reward.http_api import create_http_app
    from services.reward.metrics import RewardMetrics
    from services.reward.settings import RewardSettings
    from services.trainer import main as trainer_main
    from services.trainer.settings import TrainerSettings

    info = SimpleNamespace(backend="hf", model="clip", device="cpu")
    scorer = SimpleNamespace(
        metrics=RewardMetrics(), settings=RewardSettings(), backend=SimpleNamespace(info=info)
    )
    # With a token set: a probe sends none, so its path must not need one.
    reward = TestClient(create_http_app(scorer, token="a-token"))
    generator, generator_port = serve_health(
        SimpleNamespace(healthy=True, adapter_version=None), GeneratorMetrics(), "127.0.0.1", 0
    )
    trainer_loop = SimpleNamespace(healthy=True, iteration=1, adapter_version=None)
    trainer, trainer_port = trainer_main.serve_http(
        lambda: trainer_main._health(trainer_loop), CollectorRegistry(), "127.0.0.1", 0
    )

    def get(port: int, path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
                return answer.status
        except urllib.error.HTTPError as e:
            return e.code

    yield lambda cls, path: {
        RewardSettings: lambda: reward.get(path).status_code,
        GeneratorSettings: lambda: get(generator_port, path),
        TrainerSettings: lambda: get(trainer_port, path),
    }[cls]()
    generator.shutdown()
    trainer.shutdown()


def all_problems(docs: list[dict], status) -> list[str]:
    return (
        checks.command_problems(docs)
        + checks.variable_problems(docs)
        + checks.reference_problems(docs)
        + checks.security_problems(docs)
        + checks.secret_problems(docs)
        + checks.gpu_problems(docs)
        + checks.probe_problems(docs, status)
        + checks.wiring_problems(docs)
        + checks.workload_problems(docs)
    )


def schema_problems(docs: list[dict], version: str) -> list[str]:
    import kubernetes_validate

    problems = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            problems.append(
                f"{doc['kind']}/{doc['metadata']['name']}: {e.message} at "
                f"{'.'.join(map(str, e.path))}"
            )
    return problems


# -- the manifests as they are ---------------------------------------------------------------
def test_the_overlay_deploys_every_piece(docs):
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {
        ("StatefulSet", "csr-redis"),
        ("Deployment", "csr-reward"),
        ("Deployment", "csr-generator"),
        ("Deployment", "csr-trainer"),
        ("HorizontalPodAutoscaler", "csr-reward"),
        ("PodDisruptionBudget", "csr-reward"),
        ("NetworkPolicy", "csr-redis"),
    } <= kinds
    assert {
        d["metadata"].get("namespace")
        for d in docs
        if d["kind"] not in ("Namespace", "PersistentVolume")
    } == {"csr"}


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_manifests_match_the_kubernetes_schemas(docs, version):
    assert schema_problems(docs, version) == []


def test_containers_run_the_commands_compose_runs(docs):
    commands = {tuple(c["command"]) for _, _, c, _ in manifests.csr_containers(docs)}
    compose = {tuple(s["command"]) for s in manifests.load_compose().values() if "build" in s}
    assert commands == compose == set(manifests.settings_classes())


def test_every_check_passes(docs, status):
    assert all_problems(docs, status) == []


def test_the_base_renders_on_its_own(tree):
    done = render(tree, "base")
    assert done.returncode == 0, done.stderr


def test_the_overlay_refuses_to_render_without_its_secrets(tree, tmp_path):
    bare = tmp_path / "kubernetes"
    shutil.copytree(tree, bare)
    (bare / OVERLAY / "secrets.env").unlink()
    done = render(bare, OVERLAY)
    assert done.returncode != 0 and "secrets.env" in done.stderr


# -- broken copies: each must be caught ------------------------------------------------------
def container(docs: list[dict], workload: str) -> dict:
    [found] = [c for name, _, c in manifests.containers(docs) if name == workload]
    return found


def pod(docs: list[dict], workload: str) -> dict:
    return manifests.pod_specs(docs)[workload]


def env(docs: list[dict], workload: str, name: str) -> dict:
    [found] = [v for v in container(docs, workload)["env"] if v["name"] == name]
    return found


def mount(docs: list[dict], workload: str, name: str) -> dict:
    [found] = [m for m in container(docs, workload)["volumeMounts"] if m["name"] == name]
    return found


def volume(docs: list[dict], workload: str, name: str) -> dict:
    [found] = [v for v in pod(docs, workload)["volumes"] if v["name"] == name]
    return found


def plain(var: dict, value: str) -> None:
    var.pop("valueFrom")
    var["value"] = value


def writable_mount(docs: list[dict], workload: str, name: str) -> None:
    mount(docs, workload, name).pop("readOnly")
    volume(docs, workload, name)["persistentVolumeClaim"].pop("readOnly")


BREAKAGES = {
    "not a csr command": (
        lambda d: container(d, "csr-generator").update(command=["csr", "generator"]),
        "is not a csr service command",
    ),
    "a setting that does not exist": (
        lambda d: container(d, "csr-reward")["env"].append(
            {"name": "CSR_REWARD_MODEL_PATH", "value": "/models/x"}
        ),
        "CSR_REWARD_MODEL_PATH",
    ),
    "another service's setting": (
        lambda d: container(d, "csr-generator")["env"].append(
            {"name": "CSR_TRAINER_WORK_DIR", "value": "/work"}
        ),
        "not a field of GeneratorSettings",
    ),
    "a value the settings refuse": (
        lambda d: env(d, "csr-generator", "CSR_GENERATOR_HTTP_PORT").update(value="eighty"),
        "settings are refused",
    ),
    "a variable used before it is defined": (
        lambda d: container(d, "csr-trainer")["env"].reverse(),
        "uses $(REDIS_PASSWORD), not defined before it",
    ),
    "a Secret key that does not exist": (
        lambda d: env(d, "csr-reward", "CSR_REWARD_TOKEN")["valueFrom"]["secretKeyRef"].update(
            key="TOKEN"
        ),
        "/TOKEN, which is not defined",
    ),
    "a ConfigMap that does not exist": (
        lambda d: env(d, "csr-trainer", "CSR_TRAINER_MODEL")["valueFrom"]["configMapKeyRef"].update(
            name="settings"
        ),
        "reads settings/CSR_VLM_MODEL",
    ),
    "a claim that does not exist": (
        lambda d: volume(d, "csr-trainer", "work")["persistentVolumeClaim"].update(
            claimName="csr-work"
        ),
        "uses csr-work, which is not",
    ),
    "a volume that is not defined": (
        lambda d: mount(d, "csr-trainer", "work").update(name="workdir"),
        "the volume workdir mounted at /work is not defined",
    ),
    "a probe path the service does not serve": (
        lambda d: container(d, "csr-reward")["readinessProbe"]["httpGet"].update(path="/ready"),
        "path /ready answers 404",
    ),
    "a probe on another port": (
        lambda d: container(d, "csr-trainer")["livenessProbe"]["httpGet"].update(port=8081),
        "is not the HTTP port 8082",
    ),
    "a writable root filesystem": (
        lambda d: container(d, "csr-redis")["securityContext"].update(readOnlyRootFilesystem=False),
        "csr-redis: the root filesystem is writable",
    ),
    "root": (
        lambda d: pod(d, "csr-reward")["securityContext"].update(runAsUser=0),
        "csr-reward: the pod may run as root",
    ),
    "privilege escalation": (
        lambda d: container(d, "csr-generator")["securityContext"].pop("allowPrivilegeEscalation"),
        "csr-generator: allows privilege escalation",
    ),
    "no writable /tmp": (
        lambda d: container(d, "csr-generator")["volumeMounts"].remove(
            mount(d, "csr-generator", "tmp")
        ),
        "csr-generator: cannot write /tmp",
    ),
    "a read-only adapter store for the trainer": (
        lambda d: mount(d, "csr-trainer", "adapters").update(readOnly=True),
        "cannot write /adapters",
    ),
    "a token in plain text": (
        lambda d: plain(env(d, "csr-generator", "CSR_GENERATOR_REWARD_TOKEN"), "abc"),
        "REWARD_TOKEN is not read from a Secret",
    ),
    "an admin token in plain text": (
        lambda d: plain(env(d, "csr-generator", "CSR_GENERATOR_ADMIN_TOKEN"), "abc"),
        "ADMIN_TOKEN is not read from a Secret",
    ),
    "a password in plain text": (
        lambda d: env(d, "csr-trainer", "CSR_TRAINER_REDIS_URL").update(
            value="redis://:hunter2@csr-redis:6379/0"
        ),
        "password is not from a Secret",
    ),
    "a generator without a GPU": (
        lambda d: container(d, "csr-generator")["resources"]["limits"].pop("nvidia.com/gpu"),
        "csr-generator: asks for 0 GPUs",
    ),
    "two GPUs for the trainer": (
        lambda d: container(d, "csr-trainer")["resources"]["limits"].update({"nvidia.com/gpu": 2}),
        "csr-trainer: asks for 2 GPUs",
    ),
    "a GPU service that may fall back to the CPU": (
        lambda d: env(d, "csr-trainer", "CSR_TRAINER_DEVICE").update(value="auto"),
        "csr-trainer: CSR_TRAINER_DEVICE is 'auto' with a GPU",
    ),
    "a generator without a device setting": (
        lambda d: container(d, "csr-generator")["env"].remove(
            env(d, "csr-generator", "CSR_GENERATOR_DEVICE")
        ),
        "csr-generator: CSR_GENERATOR_DEVICE is unset with a GPU",
    ),
    "a reward worker on cuda without a GPU": (
        lambda d: env(d, "csr-reward", "CSR_REWARD_DEVICE").update(value="cuda"),
        "csr-reward: CSR_REWARD_DEVICE is 'cuda' without a GPU",
    ),
    "a reward target that reaches one worker": (
        lambda d: env(d, "csr-generator", "CSR_GENERATOR_REWARD_TARGET").update(
            value="csr-reward:50051"
        ),
        "does not resolve every reward worker",
    ),
    "a reward target on the wrong port": (
        lambda d: env(d, "csr-generator", "CSR_GENERATOR_REWARD_TARGET").update(
            value="dns:///csr-reward:8080"
        ),
        "is not the service's port 50051",
    ),
    "adapters at another path in the generators": (
        lambda d: mount(d, "csr-generator", "adapters").update(mountPath="/store"),
        "do not see the trainer's adapter store",
    ),
    "generators that can write the adapter store": (
        lambda d: writable_mount(d, "csr-generator", "adapters"),
        "generators can write the adapter store",
    ),
    "models on a writable volume": (
        lambda d: writable_mount(d, "csr-reward", "models"),
        "/models/clip-vit-large-patch14-336 is not on a read-only",
    ),
    "a reward Service with one address": (
        lambda d: manifests.named(d, "Service")["csr-reward"]["spec"].pop("clusterIP"),
        "the reward Service is not headless",
    ),
    "no disruption budget": (
        lambda d: d.remove(manifests.named(d, "PodDisruptionBudget")["csr-reward"]),
        "no PodDisruptionBudget",
    ),
    "two trainers": (
        lambda d: manifests.named(d, "Deployment")["csr-trainer"]["spec"].update(replicas=2),
        "the trainer is not one replica",
    ),
    "a short grace period": (
        lambda d: pod(d, "csr-generator").update(terminationGracePeriodSeconds=30),
        "less grace than compose",
    ),
    "Redis open to everyone": (
        lambda d: manifests.named(d, "NetworkPolicy")["csr-redis"]["spec"]["ingress"][0].pop(
            "from"
        ),
        "not exactly the generators and the trainer",
    ),
    "Redis without persistence": (
        lambda d: container(d, "csr-redis")["args"].remove("--appendonly"),
        "append-only",
    ),
    "Redis with append-only files turned off": (
        lambda d: container(d, "csr-redis").update(
            args=["no" if a == "yes" else a for a in container(d, "csr-redis")["args"]]
        ),
        "append-only",
    ),
    "reward workers without probes": (
        lambda d: [
            container(d, "csr-reward").pop(kind)
            for kind in ("startupProbe", "readinessProbe", "livenessProbe")
        ],
        "csr-reward: has no HTTP readinessProbe",
    ),
    "a literal Redis password": (
        lambda d: plain(env(d, "csr-redis", "REDIS_PASSWORD"), "hunter2"),
        "csr-redis: REDIS_PASSWORD is not read from a Secret",
    ),
    "reward workers without their token": (
        lambda d: container(d, "csr-reward")["env"].remove(
            env(d, "csr-reward", "CSR_REWARD_TOKEN")
        ),
        "csr-reward: CSR_REWARD_TOKEN is not set from a Secret",
    ),
    "generators that do not send the token": (
        lambda d: container(d, "csr-generator")["env"].remove(
            env(d, "csr-generator", "CSR_GENERATOR_REWARD_TOKEN")
        ),
        "csr-generator: CSR_GENERATOR_REWARD_TOKEN is not set from a Secret",
    ),
    "no seccomp profile": (
        lambda d: [
            (
                pod(d, w).get("securityContext", {}).pop("seccompProfile", None),
                container(d, w).get("securityContext", {}).pop("seccompProfile", None),
            )
            for w in ("csr-trainer",)
        ],
        "csr-trainer: runs without a seccomp profile",
    ),
}


@pytest.mark.parametrize("breakage", BREAKAGES, ids=list(BREAKAGES))
def test_a_broken_manifest_is_caught(docs, status, breakage):
    broken = copy.deepcopy(docs)
    change, expected = BREAKAGES[breakage]
    change(broken)
    found = all_problems(broken, status)
    assert any(expected in problem for problem in found), found


def test_a_field_the_schema_does_not_know_is_caught(docs):
    broken = copy.deepcopy(docs)
    container(broken, "csr-trainer")["securityContext"]["readOnlyRootFileSystem"] = True
    assert any("readOnlyRootFileSystem" in p for p in schema_problems(broken, SCHEMA_VERSIONS[0]))


def env_keys(path: Path) -> set[str]:
    return {
        line.split("=")[0]
        for line in path.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }


def test_the_settings_and_secrets_have_the_names_compose_gives_them():
    """The base's settings and the overlay's secrets are named as in .env.example."""
    compose_names = env_keys(manifests.ROOT / ".env.example")
    settings = env_keys(KUBE / "base" / "settings.env")
    secrets = env_keys(KUBE / OVERLAY / "secrets.env.example")
    assert {"CSR_VLM_MODEL", "CSR_REWARD_MODEL", "CSR_PROMPT_SET"} <= settings <= compose_names
    assert secrets == {"REDIS_PASSWORD", "CSR_REWARD_TOKEN", "CSR_GENERATOR_ADMIN_TOKEN"}
    assert secrets <= compose_names


def test_the_generators_admin_token_comes_from_the_secret_and_the_trainer_has_it(docs):
    refs = [
        env(docs, "csr-generator", "CSR_GENERATOR_ADMIN_TOKEN"),
        env(docs, "csr-trainer", "CSR_TRAINER_GENERATOR_ADMIN_TOKEN"),
    ]
    keys = {
        (r["valueFrom"]["secretKeyRef"]["name"], r["valueFrom"]["secretKeyRef"]["key"])
        for r in refs
    }
    assert len(keys) == 1 and next(iter(keys))[1] == "CSR_GENERATOR_ADMIN_TOKEN"
