"""Checks of rendered Kubernetes manifests against the code, as functions of the documents.

Each `*_problems(docs)` returns a list of sentences naming what is wrong (empty when all is
well), so the tests can assert both that the real manifests pass and that a broken copy fails.
"""

from __future__ import annotations

import re

from pydantic import ValidationError

from tests.unit.kubernetes_manifests import (
    VARIABLE,
    containers,
    csr_containers,
    environment,
    image_user,
    load_compose,
    mount_of,
    mounts,
    named,
    pod_specs,
    pods_selected,
    read_only,
    settings_of,
    settings_or_none,
    writable,
)


def command_problems(docs: list[dict]) -> list[str]:
    from typer.testing import CliRunner

    from csr_cli.main import app

    problems = []
    for name, _, c, cls in csr_containers(docs):
        result = CliRunner().invoke(app, [*c["command"][1:], "--help"])
        if result.exit_code != 0 or cls is None:
            problems.append(f"{name}: {c['command']} is not a csr service command")
    return problems


def variable_problems(docs: list[dict]) -> list[str]:
    """CSR_* names are fields of the container's own service; the values pass its settings;
    every $(VAR) names a variable defined before it."""
    problems = []
    for name, _, c in containers(docs):
        defined: set[str] = set()
        for var in c.get("env", []):
            for used in VARIABLE.findall(var.get("value", "")):
                if used not in defined:
                    problems.append(f"{name}: {var['name']} uses $({used}), not defined before it")
            defined.add(var["name"])
        for text in c.get("command", []) + c.get("args", []):
            problems += [
                f"{name}: $({used}) in the command is not defined"
                for used in VARIABLE.findall(text)
                if used not in defined
            ]
    for name, _, c, cls in csr_containers(docs):
        if cls is None:
            continue
        prefix, fields = cls.model_config["env_prefix"], {f.upper() for f in cls.model_fields}
        for key in environment(docs, c):
            if key.startswith("CSR_") and (
                not key.startswith(prefix) or key[len(prefix) :] not in fields
            ):
                problems.append(f"{name}: {key} is not a field of {cls.__name__}")
        try:
            settings_of(docs, c, cls)
        except ValidationError as e:
            problems.append(f"{name}: its settings are refused: {e}")
    return problems


def reference_problems(docs: list[dict]) -> list[str]:
    """Every ConfigMap, Secret, key, volume, claim and persistent volume referenced exists."""
    maps = {n: d.get("data", {}) for n, d in named(docs, "ConfigMap").items()}
    secrets = {n: d.get("data", {}) for n, d in named(docs, "Secret").items()}
    claims, volumes = named(docs, "PersistentVolumeClaim"), named(docs, "PersistentVolume")
    problems = []
    for name, pod, c in containers(docs):
        for var in c.get("env", []):
            source = var.get("valueFrom", {})
            for kind, store in (("configMapKeyRef", maps), ("secretKeyRef", secrets)):
                if kind in source and source[kind]["key"] not in store.get(
                    source[kind]["name"], {}
                ):
                    problems.append(
                        f"{name}: {var['name']} reads {source[kind]['name']}/"
                        f"{source[kind]['key']}, which is not defined"
                    )
        for source in c.get("envFrom", []):
            for kind, store in (("configMapRef", maps), ("secretRef", secrets)):
                if kind in source and source[kind]["name"] not in store:
                    problems.append(f"{name}: envFrom {source[kind]['name']} is not defined")
        templates = {
            t["metadata"]["name"]
            for d in docs
            if d["kind"] == "StatefulSet" and d["spec"]["template"]["spec"] is pod
            for t in d["spec"].get("volumeClaimTemplates", [])
        }
        for path, (mount, volume) in mounts(pod, c).items():
            if not volume and mount["name"] not in templates:
                problems.append(
                    f"{name}: the volume {mount['name']} mounted at {path} is not defined"
                )
    for name, pod in pod_specs(docs).items():
        for volume in pod.get("volumes", []):
            claim = volume.get("persistentVolumeClaim", {}).get("claimName")
            secret = volume.get("secret", {}).get("secretName")
            config = volume.get("configMap", {}).get("name")
            for missing in ((claim, claims), (secret, secrets), (config, maps)):
                if missing[0] is not None and missing[0] not in missing[1]:
                    problems.append(
                        f"{name}: volume {volume['name']} uses {missing[0]}, which is not defined"
                    )
    for name, claim in claims.items():
        bound = claim["spec"].get("volumeName")
        if bound and (
            bound not in volumes
            or not set(claim["spec"]["accessModes"]) <= set(volumes[bound]["spec"]["accessModes"])
        ):
            problems.append(f"claim {name} binds {bound}, not defined with its access modes")
    return problems


def security_problems(docs: list[dict]) -> list[str]:
    """Non-root, no privilege escalation, a read-only root, and a writable place for what
    each service writes: /tmp and its home (caches) for csr; the trainer's store and work."""
    uid, user = image_user()
    problems = []
    for name, pod in pod_specs(docs).items():
        context = pod.get("securityContext", {})
        if not context.get("runAsNonRoot") or context.get("runAsUser", 0) == 0:
            problems.append(f"{name}: the pod may run as root")
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{name}: mounts a service-account token it does not use")
    for name, _, c in containers(docs):
        context = c.get("securityContext", {})
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allows privilege escalation")
        if context.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: the root filesystem is writable")
        if "ALL" not in context.get("capabilities", {}).get("drop", []):
            problems.append(f"{name}: keeps Linux capabilities")
        profile = {
            **pod_specs(docs)[name].get("securityContext", {}),
            **context,
        }.get("seccompProfile", {})
        if profile.get("type") not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: runs without a seccomp profile")
    for name, pod, c, cls in csr_containers(docs):
        if pod.get("securityContext", {}).get("runAsUser") != uid:
            problems.append(f"{name}: runs as a user other than the image's {user} ({uid})")
        wanted = ["/tmp", f"/home/{user}"]
        settings = settings_or_none(docs, c, cls)
        if settings is not None and cls.__name__ == "TrainerSettings":
            wanted += [settings.adapter_store, settings.work_dir]
        problems += [
            f"{name}: cannot write {path}" for path in wanted if not writable(docs, pod, c, path)
        ]
    return problems


def secret_problems(docs: list[dict]) -> list[str]:
    """The reward token and the Redis password come from Secrets, never from a literal; the
    reward workers require the token and the generators send it."""
    problems = []
    required = {"csr-reward": "CSR_REWARD_TOKEN", "csr-generator": "CSR_GENERATOR_REWARD_TOKEN"}
    for name, _, c in containers(docs):
        from_secret = {
            v["name"] for v in c.get("env", []) if "secretKeyRef" in v.get("valueFrom", {})
        }
        if name in required and required[name] not in from_secret:
            problems.append(f"{name}: {required[name]} is not set from a Secret")
        for var in c.get("env", []):
            if var["name"].endswith(("TOKEN", "PASSWORD")) and var["name"] not in from_secret:
                problems.append(f"{name}: {var['name']} is not read from a Secret")
            if var["name"].endswith("REDIS_URL"):
                password = re.match(r"redis://:([^@]*)@", var.get("value", ""))
                used = VARIABLE.fullmatch(password[1]) if password else None
                if used is None or used[1] not in from_secret:
                    problems.append(f"{name}: {var['name']}'s password is not from a Secret")
    return problems


def gpu_problems(docs: list[dict]) -> list[str]:
    """One nvidia.com/gpu for each generator and trainer pod; none for the others. A service
    with a GPU runs on cuda (stopping if it cannot), one without on the CPU, never on auto."""
    problems = []
    for name, _, c, cls in csr_containers(docs):
        if cls is None:
            continue
        has_gpu = str(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", "0")) != "0"
        variable = f"{cls.model_config['env_prefix']}DEVICE"
        device = environment(docs, c).get(variable)
        if device is None or not re.fullmatch("cuda(:[0-9]+)?" if has_gpu else "cpu", device):
            said = "unset" if device is None else repr(device)
            where = "with" if has_gpu else "without"
            problems.append(f"{name}: {variable} is {said} {where} a GPU")
    for name, pod, c in containers(docs):
        wants = tuple(c.get("command", [])) in (("csr", "generate"), ("csr", "train"))
        resources = c.get("resources", {})
        limit = str(resources.get("limits", {}).get("nvidia.com/gpu", "0"))
        request = str(resources.get("requests", {}).get("nvidia.com/gpu", limit))
        if limit != ("1" if wants else "0") or request != limit:
            problems.append(f"{name}: asks for {limit} GPUs (requests {request})")
        tolerated = any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations", []))
        if wants and not tolerated:
            problems.append(f"{name}: does not tolerate the nvidia.com/gpu taint of GPU nodes")
    return problems


def probe_problems(docs: list[dict], status) -> list[str]:
    """Every service has a readiness and a liveness probe; every HTTP probe targets a declared
    port that is the service's HTTP port, and its path answers 200 there (`status(settings
    class, path)` asks the service's own HTTP code)."""
    problems = []
    for name, _, c, cls in csr_containers(docs):
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        settings = settings_or_none(docs, c, cls)
        http_port = settings.http_port if settings is not None else None
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = c.get(kind, {}).get("httpGet")
            if probe is None:
                if kind != "startupProbe":
                    problems.append(f"{name}: has no HTTP {kind}")
                continue
            port = ports.get(probe["port"], probe["port"])
            if port not in ports.values() or port != http_port:
                problems.append(
                    f"{name}: {kind} port {probe['port']} is not the HTTP port {http_port}"
                )
            if cls is not None and (code := status(cls, probe["path"])) != 200:
                problems.append(f"{name}: {kind} path {probe['path']} answers {code}")
    return problems


def services(docs: list[dict]) -> dict[str, tuple[str, dict, dict, object]]:
    """'reward', 'generator', 'trainer' -> (workload, pod, container, settings), for each
    container whose command and settings are valid (the other checks report the rest)."""
    names = {
        "RewardSettings": "reward",
        "GeneratorSettings": "generator",
        "TrainerSettings": "trainer",
    }
    found = {}
    for name, pod, c, cls in csr_containers(docs):
        settings = settings_or_none(docs, c, cls)
        if settings is not None:
            found[names[cls.__name__]] = (name, pod, c, settings)
    return found


def service_target_problems(
    docs: list[dict], target: str, service_name: str, port: int, workload: str
) -> list[str]:
    """`target` (host:port) is `service_name`'s port, and that Service selects `workload`."""
    host, _, given = target.rpartition(":")
    service = named(docs, "Service").get(host)
    if service is None or host != service_name:
        return [f"{target} is not the Service {service_name}"]
    problems = []
    if int(given) != port or port not in [p["port"] for p in service["spec"]["ports"]]:
        problems.append(f"{target}: port {given} is not the service's port {port}")
    if pods_selected(docs, service["spec"]["selector"]) != {workload}:
        problems.append(f"the Service {host} does not select the {workload} pods")
    return problems


def wiring_problems(docs: list[dict]) -> list[str]:
    """The pieces reach each other: every reward worker through a headless Service, Redis
    through its Service, adapters through the same path on one shared volume; models and
    images are read-only."""
    found = services(docs)
    if set(found) != {"reward", "generator", "trainer"}:
        return [f"only {sorted(found)} of reward, generator, trainer can be wired"]
    reward, _, _, rw = found["reward"]
    gen, tr = found["generator"][3], found["trainer"][3]
    problems = []
    if not gen.reward_target.startswith("dns:///"):
        problems.append(f"{gen.reward_target} does not resolve every reward worker (dns:///)")
    problems += service_target_problems(
        docs, gen.reward_target.removeprefix("dns:///"), "csr-reward", rw.grpc_port, reward
    )
    if named(docs, "Service").get("csr-reward", {}).get("spec", {}).get("clusterIP") != "None":
        problems.append("the reward Service is not headless: one address, one worker")
    for settings in (gen, tr):
        address = re.sub(r"^redis://[^@]*@", "", settings.redis_url).split("/")[0]
        problems += service_target_problems(docs, address, "csr-redis", 6379, "csr-redis")
    for name, pod, c, settings in found.values():
        for path in (settings.model, getattr(settings, "image_root", None)):
            if path and path.startswith("/") and not read_only(pod, c, path):
                problems.append(f"{name}: {path} is not on a read-only volume")
    return problems + adapter_problems(docs, found["generator"], found["trainer"])


def adapter_problems(docs: list[dict], generator: tuple, trainer: tuple) -> list[str]:
    """The trainer writes adapters where every generator reads them, at the same path (the
    announcements name it), on a ReadWriteMany volume the generators mount read-only."""
    _, gen_pod, gen_c, _ = generator
    _, tr_pod, tr_c, tr = trainer
    seen, written = (
        mount_of(gen_pod, gen_c, tr.adapter_store),
        mount_of(tr_pod, tr_c, tr.adapter_store),
    )

    def claim(mounted) -> str | None:
        return mounted[2].get("persistentVolumeClaim", {}).get("claimName")

    if seen is None or written is None or seen[0] != written[0] or claim(seen) != claim(written):
        return [f"the generators do not see the trainer's adapter store {tr.adapter_store}"]
    if not read_only(gen_pod, gen_c, tr.adapter_store):
        return ["the generators can write the adapter store"]
    modes = (
        named(docs, "PersistentVolumeClaim")
        .get(claim(seen), {})
        .get("spec", {})
        .get("accessModes", [])
    )
    if "ReadWriteMany" not in modes:
        return ["the adapter store is not ReadWriteMany: the generators run on other nodes"]
    return []


def workload_problems(docs: list[dict]) -> list[str]:
    """Replicas, strategies, grace periods, autoscaling and Redis's persistence and policy."""
    compose = load_compose()
    deployments, problems = named(docs, "Deployment"), []
    trainer = deployments["csr-trainer"]["spec"]
    if trainer.get("replicas") != 1 or trainer.get("strategy", {}).get("type") != "Recreate":
        problems.append("the trainer is not one replica with the Recreate strategy")
    for name, service in (("csr-generator", "generator-0"), ("csr-trainer", "trainer")):
        grace = deployments[name]["spec"]["template"]["spec"].get(
            "terminationGracePeriodSeconds", 30
        )
        value, unit = re.fullmatch(r"(\d+)([sm])", compose[service]["stop_grace_period"]).groups()
        if grace < int(value) * (60 if unit == "m" else 1):
            problems.append(f"{name}: {grace}s is less grace than compose gives its batch")
    hpa = next(iter(named(docs, "HorizontalPodAutoscaler").values()), None)
    if hpa is None or hpa["spec"]["scaleTargetRef"]["name"] != "csr-reward":
        problems.append("no autoscaler scales the reward workers")
    elif "replicas" in deployments["csr-reward"]["spec"]:
        problems.append("csr-reward sets replicas, which fight the autoscaler's")
    budgets = [
        pods_selected(docs, b["spec"]["selector"])
        for b in named(docs, "PodDisruptionBudget").values()
    ]
    if {"csr-reward"} not in budgets:
        problems.append("no PodDisruptionBudget keeps reward workers up")
    return problems + redis_problems(docs)


def redis_problems(docs: list[dict]) -> list[str]:
    problems = []
    redis = named(docs, "StatefulSet").get("csr-redis")
    if redis is None:
        return ["Redis is not a StatefulSet named csr-redis"]
    [c] = redis["spec"]["template"]["spec"]["containers"]
    argv = c.get("command", []) + c.get("args", [])
    if (
        "--requirepass" not in argv
        or argv[argv.index("--requirepass") + 1] != "$(REDIS_PASSWORD)"
        or "--appendonly" not in argv
        or argv[argv.index("--appendonly") + 1 :][:1] != ["yes"]
    ):
        problems.append("Redis does not require the Secret's password with append-only files")
    data = mount_of(redis["spec"]["template"]["spec"], c, "/data")
    templates = redis["spec"].get("volumeClaimTemplates", [])
    if data is None or data[1]["name"] not in [t["metadata"]["name"] for t in templates]:
        problems.append("Redis's /data is not on its own persistent volume")
    policies = [
        p
        for p in named(docs, "NetworkPolicy").values()
        if pods_selected(docs, p["spec"]["podSelector"]) == {"csr-redis"}
    ]
    allowed = set().union(
        *(
            pods_selected(docs, peer.get("podSelector", {}))
            for p in policies
            for rule in p["spec"].get("ingress", [])
            for peer in rule.get("from", [{"podSelector": {}}])
        )
    )
    if not policies or allowed != {"csr-generator", "csr-trainer"}:
        problems.append(
            f"Redis's NetworkPolicy admits {sorted(allowed) or 'everyone'}, "
            "not exactly the generators and the trainer"
        )
    return problems
