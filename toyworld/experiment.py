"""CSR on the toy world, end to end: models, a prompt set, `csr up`, and an evaluation of
every iteration.

Owns one experiment run: for a seed and a named variant (the defaults, or an ablation) it
builds or reuses the seed's toy models, writes the seed's training prompt set (rendered scenes
in the authors' JSON format), writes the `csr up` and algorithm files, runs the whole system
(embedded Redis, reward worker, generator and trainer as processes over gRPC and Redis) for
T iterations, and evaluates the base model and the adapter that closed each iteration on
held-out scenes. A finished run leaves `eval.json` and is not run again. Everything is
derived from the seed: the models rebuild to the same bits, and with the same install a CSR
run gives the same adapters (README, "Repeatable to the bit").

Layout under `out`: `models/seed-S/` (the toy models and their base evaluation),
`prompts/seed-S/` (images and prompts.json), `VARIANT/seed-S/` (csr.yaml, algorithm.yaml,
run/ with Redis, adapters and trainer work, up.log, eval.json).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from toyworld.world import WorldConfig, render, scenes

logger = logging.getLogger(__name__)

# Each variant is a set of algorithm overrides in CSRConfig.from_dict's form, on top of the toy
# world's settings (TOY_ALGORITHM). "csr" is those settings as they are; each other variant
# changes one thing, as the paper's ablations (Table 2) do.
FREE_END = {"end_relevance": None}
VARIANTS: dict[str, dict] = {
    "csr": {},
    "lambda-0": {"reward": {"lam": 0.0}},  # self-reward only
    "lambda-1": {"reward": {"lam": 1.0}},  # image relevance only
    "sample": {"search": {"expansion": "sample"}},  # sampled candidates, not group beams
    "mean-logprob": {"reward": {"self_score": "mean-logprob"}},  # length-normalised R_T
    "free-end": {"reward": FREE_END},  # ending costs nothing (paper, released code)
    "sum": {"selection": {"aggregation": "sum"}, "reward": FREE_END},  # the paper's wording
    "sum-baseline": {
        "selection": {"aggregation": "sum"},
        "reward": {**FREE_END, "relevance_baseline": 40.0},
    },
    "authors-code": {"preset": "authors-code", "reward": FREE_END},  # released search, ranks
    # R_T and R_I as sibling ranks (the released code's scale) in the paper's search, so that
    # lambda weighs comparable numbers; with raw scores R_T (<= 1) barely moves R (0-100)
    "rank": {"reward": {"normalization": "rank"}},
    "rank-lambda-1": {"reward": {"normalization": "rank", "lam": 1.0}},
    "margin-3": {"selection": {"min_margin": 3.0}},
    "margin-5": {"selection": {"min_margin": 5.0}},
    "margin-8": {"selection": {"min_margin": 8.0}},
    "e25-m5": {"selection": {"min_margin": 5.0}, "reward": {"end_relevance": 25.0}},
    "e30-m5": {"selection": {"min_margin": 5.0}, "reward": {"end_relevance": 30.0}},
    "e25": {"reward": {"end_relevance": 25.0}},
    "e30": {"reward": {"end_relevance": 30.0}},
    "e20": {"reward": {"end_relevance": 20.0}},
    "sum-b35": {
        "selection": {"aggregation": "sum"},
        "reward": {**FREE_END, "relevance_baseline": 35.0},
    },
    # garbled candidates (R_I 0) dropped instead of filling the bottom places; measured
    # against the defaults of that time, which had no sentence gap
    "relevant": {"search": {"min_relevance": 1.0}, "selection": {"min_sentence_gap": None}},
    # a pair from any two responses, however alike their worst sentences (the paper's rule)
    "no-gap": {"selection": {"min_sentence_gap": None}},
    # the gap also over every rejected sentence the chosen response lacks
    "unshared": {"selection": {"gap_sentences": "unshared"}},
    "sum-b45": {
        "selection": {"aggregation": "sum"},
        "reward": {**FREE_END, "relevance_baseline": 45.0},
    },
}
# The toy world's algorithm settings: the paper's (group beam search 5/5/3.0, lambda 0.9,
# R_T the product of token probabilities) and the project's path mean, plus settings that
# depend on the toy models, each measured (README, "The toy world"):
# - end_relevance 35: the toy CLIP scores sentences about present objects far above absent
#   ones; with a free end the mean picks the single likeliest sentence and recall collapses.
# - min_words 3: the toy VLM knows one way to begin a sentence, so diverse beam groups offer
#   fragments ("No.", "cross.") that crowd the bottom places by the second iteration.
# - max_sentences 6: one per shape.
# - min_sentence_gap 2: by the third iteration the model rarely hallucinates on its prompts,
#   and most worst-scored responses are true ones that stop earlier or name other present
#   objects, their worst sentence the chosen one's; a pair needs a rejected sentence scored
#   well below the chosen's (the toy CLIP: absent objects ~9, present ~51).
# - DPO: learning rate 5e-4 with the cosine schedule (2e-3 collapsed the model; a constant
#   5e-4 over three iterations made it drop periods and repeat itself); LoRA r16/alpha32 suits
#   a 128-wide language model (the paper's 128/256 would out-size it); batch 8.
TOY_ALGORITHM = {
    "search": {"max_sentences": 6, "min_words": 3},
    "reward": {"end_relevance": 35.0},
    "selection": {"min_sentence_gap": 2.0},
    "dpo": {
        "learning_rate": 5e-4,
        "lr_scheduler": "cosine",
        "lora_r": 16,
        "lora_alpha": 32,
        "batch_size": 8,
    },
}
PROMPT_SEED_BASE = 20_000  # CSR's training scenes: apart from the models' and held-out seeds
DESCRIBE = "Describe the image."


class ExperimentError(RuntimeError):
    """An experiment cannot run as asked; the message names the problem and the fix."""


@dataclass(frozen=True)
class RunPlan:
    """How much of the toy world an experiment runs: its length and sizes, fit for a 2-core
    CPU in minutes. The algorithm is TOY_ALGORITHM with the variant's changes; `iterations`
    goes into it as CSRConfig.iterations."""

    prompts: int = 300
    iterations: int = 3
    generator_batch: int = 16
    eval_scenes: int = 1000

    def __post_init__(self) -> None:
        for name in ("prompts", "iterations", "generator_batch", "eval_scenes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ExperimentError(f"{name}={value!r} must be a whole number >= 1")


def variant_overrides(name: str) -> dict:
    try:
        return VARIANTS[name]
    except KeyError as e:
        raise ExperimentError(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}") from e


def algorithm_settings(variant: str, seed: int, plan: RunPlan) -> dict:
    """The algorithm file of a run: the variant's overrides on the toy world's caps and seed,
    checked by CSRConfig.from_dict before anything starts."""
    from csr.config import CSRConfig

    overrides = variant_overrides(variant)
    data: dict = {"preset": overrides.get("preset", "paper"), "iterations": plan.iterations}
    sections = {name: dict(fields) for name, fields in TOY_ALGORITHM.items()}
    sections["search"]["seed"] = seed
    sections["dpo"]["seed"] = seed
    for section, fields in overrides.items():
        if section != "preset":
            sections[section] = {**sections.get(section, {}), **fields}
    data.update(sections)
    CSRConfig.from_dict(data)  # a bad variant fails here, by name
    return data


def write_prompt_set(
    directory: Path, seed: int, count: int, world: WorldConfig = WorldConfig()
) -> Path:
    """`count` training scenes as PNG files and prompts.json ({id, image, input}); the same
    files for the same seed, written once."""
    prompt_file = directory / "prompts.json"
    if prompt_file.is_file() and len(json.loads(prompt_file.read_text())) == count:
        return prompt_file
    images = directory / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, scene in enumerate(scenes(PROMPT_SEED_BASE + seed, count, world)):
        name = f"{i:05d}.png"
        render(scene, world).save(images / name)
        rows.append({"id": f"toy-{seed}-{i}", "image": name, "input": f"<image>\n{DESCRIBE}"})
    prompt_file.write_text(json.dumps(rows))
    return prompt_file


def stack_settings(
    clip: Path, vlm: Path, prompt_file: Path, algorithm: Path, seed: int, plan: RunPlan
) -> dict:
    """The `csr up` file of a run (the reward worker serves the toy CLIP through the hf
    backend, as it would a real CLIP)."""
    common = {
        "MODEL": str(vlm),
        "BASE_NAME": f"toyworld-{seed}",
        "IMAGE_ROOT": str(prompt_file.parent / "images"),
    }
    return {
        "run_dir": "run",
        "algorithm": str(algorithm),
        "reward": {"workers": 1, "settings": {"BACKEND": "hf", "MODEL": str(clip)}},
        "generator": {
            "replicas": 1,
            "settings": {
                **common,
                "PROMPT_SET": str(prompt_file),
                "BATCH_SIZE": plan.generator_batch,
            },
        },
        "trainer": {"settings": {**common, "TENSORBOARD": False}},
    }


@dataclass(frozen=True)
class RunResult:
    variant: str
    seed: int
    evaluations: list[dict]  # iteration 0 (base), 1, ..., T
    directory: Path


def run_variant(out: Path, variant: str, seed: int, plan: RunPlan, console) -> RunResult:
    """One variant on one seed: `csr up` for T iterations, then every iteration evaluated."""
    from toyworld.build import build_toyworld
    from toyworld.evaluate import EVALUATOR

    algorithm_data = algorithm_settings(variant, seed, plan)
    directory = out / variant / f"seed-{seed}"
    record = directory / "eval.json"
    models = build_toyworld(out / "models" / f"seed-{seed}", seed=seed)  # cached: a hash check
    wanted = {
        "variant": variant,
        "seed": seed,
        "plan": {k: v for k, v in asdict(plan).items() if k != "eval_scenes"},
        "algorithm": algorithm_data,
        "models": models.record["sha256"],
    }
    # another evaluation (scenes, evaluator) evaluates the run's adapters again, not re-runs it
    evaluated = {**wanted, "eval_scenes": plan.eval_scenes, "evaluator": EVALUATOR}
    done = _read_json(record)
    if done and {k: done.get(k) for k in evaluated} == evaluated:
        console.print(f"{variant} seed {seed}: already evaluated ({record})")
        return RunResult(variant, seed, done["evaluations"], directory)
    _start_afresh_unless(directory, wanted)
    prompt_file = write_prompt_set(out / "prompts" / f"seed-{seed}", seed, plan.prompts)
    (directory / "algorithm.yaml").write_text(yaml.safe_dump(algorithm_data, sort_keys=False))
    settings = stack_settings(
        models.clip, models.vlm, prompt_file, directory / "algorithm.yaml", seed, plan
    )
    (directory / "csr.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    adapters = run_stack(directory / "csr.yaml", plan.iterations, console)
    evaluations = [base_evaluation(out, seed, models, plan.eval_scenes)]
    evaluations += [_evaluate(models.vlm, adapter, plan.eval_scenes) for adapter in adapters]
    for iteration, evaluation in enumerate(evaluations):
        evaluation["iteration"] = iteration
    record.write_text(json.dumps({**evaluated, "evaluations": evaluations}, indent=2))
    return RunResult(variant, seed, evaluations, directory)


def _start_afresh_unless(directory: Path, wanted: dict) -> None:
    """Keep a run's Redis data and adapters (an interrupted run resumes) only if they were
    made with the same settings and models; otherwise start the run again from nothing."""
    import shutil

    marker = directory / "run.json"
    if _read_json(marker) != wanted:
        shutil.rmtree(directory / "run", ignore_errors=True)
        record = directory / "eval.json"
        record.unlink(missing_ok=True)
    directory.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(wanted, indent=2))


def run_stack(config_path: Path, iterations: int, console) -> list[Path]:
    """Run `csr up` on the file until the trainer closes its last iteration; the adapter that
    closed each iteration, in order."""
    from services.runtime.adapter_store import AdapterStore
    from services.stack.config import load_stack_config
    from services.stack.up import Stack

    config = load_stack_config(config_path)
    store = AdapterStore(config.run_dir / "adapters")
    if not _all_closed(store, iterations):
        stack = Stack(config, {}, console)
        code = stack.run()
        if stack.stopping.is_set():  # Ctrl-C: stop the experiment, not just this run
            raise KeyboardInterrupt
        if code != 0:
            raise ExperimentError(
                f"csr up on {config_path} exited with status {code}; its "
                f"log is above (or in {config_path.parent / 'up.log'})"
            )
    if not _all_closed(store, iterations):
        raise ExperimentError(
            f"csr up on {config_path} stopped before iteration "
            f"{iterations} closed; run the same command again to resume"
        )
    return [store.path(store.version_of_iteration(t)) for t in range(1, iterations + 1)]


def _all_closed(store, iterations: int) -> bool:
    return all(store.version_of_iteration(t) is not None for t in range(1, iterations + 1))


def base_evaluation(out: Path, seed: int, models, count: int) -> dict:
    """The base model's evaluation, once per seed and build (every variant starts from it)."""
    from toyworld.evaluate import EVALUATOR

    path = out / "models" / f"seed-{seed}" / f"base-eval-{count}.json"
    made = {"models": models.record["sha256"], "evaluator": EVALUATOR}
    cached = _read_json(path)
    if cached is not None and {k: cached.get(k) for k in made} == made:
        return cached["evaluation"]
    result = _evaluate(models.vlm, None, count)
    path.write_text(json.dumps({**made, "evaluation": result}, indent=2))
    return result


def _evaluate(vlm: Path, adapter: Path | None, count: int) -> dict:
    from toyworld.evaluate import evaluate

    logger.info(
        "evaluating %s%s on %d held-out scenes", vlm, f" + {adapter}" if adapter else "", count
    )
    return evaluate(vlm, adapter, count)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _run_logged(
    out: Path, variant: str, seed: int, plan: RunPlan, terminal, logs_to_file: bool
) -> RunResult:
    if not logs_to_file:
        return run_variant(out, variant, seed, plan, terminal)
    from rich.console import Console

    directory = out / variant / f"seed-{seed}"
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "up.log", "a") as log:
        return run_variant(out, variant, seed, plan, Console(file=log, width=160))


def run_experiments(
    out: Path, seeds: list[int], variants: list[str], plan: RunPlan, logs_to_file: bool
) -> dict:
    """Every variant on every seed, then the table (console and results.md), results.json
    and the plot across iterations; returns the runs by variant."""
    from rich.console import Console

    terminal = Console(highlight=False)
    seeds = list(dict.fromkeys(seeds))
    runs: dict[str, list[list[dict]]] = {}
    failed: dict[str, dict[int, str]] = {}
    for variant in dict.fromkeys(variants):
        for seed in seeds:
            terminal.rule(f"{variant}, seed {seed}")
            try:
                result = _run_logged(out, variant, seed, plan, terminal, logs_to_file)
            except (ExperimentError, RuntimeError, OSError, ValueError) as e:
                # the others still run; the table says why (StackConfigError is a ValueError)
                terminal.print(f"[red]{variant}, seed {seed} failed:[/] {e}")
                failed.setdefault(variant, {})[seed] = str(e)
                continue
            runs.setdefault(variant, []).append(result.evaluations)
    _write_results(out, seeds, plan, runs, failed, terminal)
    return runs


def _write_results(out: Path, seeds: list[int], plan: RunPlan, runs: dict, failed: dict, terminal):
    """results.json, results.md, the plot and the console tables of finished runs."""
    from toyworld.report import PROGRESS as PROGRESS_COLUMNS
    from toyworld.report import (
        console_table,
        markdown,
        plot,
        progress_rows,
        seed_markdown,
        table_rows,
    )

    complete = {v: r for v, r in runs.items() if v not in failed}
    if not complete:
        raise ExperimentError(f"every run failed: {failed}")
    rows = table_rows(complete)
    results = {"plan": asdict(plan), "seeds": seeds, "runs": runs, "failed": failed}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    main = complete.get("csr")
    progress = progress_rows(main) if main and len(main[0]) > 1 else None
    by_seed = seed_markdown(seeds, main) if progress and main else ""
    text = markdown(rows, len(seeds), failed, progress, plan.eval_scenes, by_seed)
    (out / "results.md").write_text(text)
    figure = plot(complete, out / "plots" / "metrics-by-iteration.png")
    title = f"Toy world, held-out scenes ({plan.eval_scenes}), seeds {', '.join(map(str, seeds))}"
    terminal.print(console_table(rows, title))
    if progress:
        terminal.print(console_table(progress, "csr, seed by seed", PROGRESS_COLUMNS))
    terminal.print(f"results: {out / 'results.md'}, {out / 'results.json'}")
    terminal.print(f"plot:    {figure}")
