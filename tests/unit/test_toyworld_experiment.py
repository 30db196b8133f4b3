"""The toy world's experiment plumbing: variants as algorithm files, and the results table's
arithmetic (mean and sample spread over seeds), by hand."""

import math

import pytest

from csr.config import CSRConfig
from csr.evaluation.summary import change, ratio, spread, summarise, t975
from toyworld.experiment import (
    TOY_ALGORITHM,
    VARIANTS,
    ExperimentError,
    RunPlan,
    algorithm_settings,
)
from toyworld.report import markdown, progress_markdown, progress_rows, seed_markdown, table_rows


def test_each_variant_changes_what_its_name_says_on_the_toy_settings():
    configs = {v: CSRConfig.from_dict(algorithm_settings(v, 7, RunPlan())) for v in VARIANTS}
    csr = configs["csr"]
    assert (csr.search.mode, csr.search.expansion, csr.reward.lam) == ("paper", "group-beam", 0.9)
    assert (csr.reward.self_score, csr.selection.aggregation) == ("product", "mean")
    assert csr.reward.end_relevance == TOY_ALGORITHM["reward"]["end_relevance"]
    assert (csr.search.min_words, csr.search.max_sentences, csr.search.seed) == (3, 6, 7)
    assert csr.iterations == 3 and csr.dpo.lr_scheduler == "cosine"
    assert (
        csr.dpo.learning_rate,
        csr.dpo.lora_r,
        csr.dpo.lora_alpha,
        csr.dpo.batch_size,
        csr.dpo.seed,
    ) == (5e-4, 16, 32, 8, 7)
    assert CSRConfig.from_dict(algorithm_settings("csr", 0, RunPlan(iterations=1))).iterations == 1
    assert configs["lambda-0"].reward.lam == 0.0 and configs["lambda-1"].reward.lam == 1.0
    assert configs["sample"].search.expansion == "sample"
    assert configs["mean-logprob"].reward.self_score == "mean-logprob"
    assert configs["free-end"].reward.end_relevance is None
    assert configs["sum"].selection.aggregation == "sum"
    assert csr.selection.min_sentence_gap == 2.0 and csr.search.min_relevance == 0.0
    assert configs["no-gap"].selection.min_sentence_gap is None
    assert configs["relevant"].search.min_relevance == 1.0
    assert configs["relevant"].selection.min_sentence_gap is None  # as it was measured
    assert configs["sum-baseline"].reward.relevance_baseline == 40.0
    authors = configs["authors-code"]
    assert (authors.search.mode, authors.reward.normalization) == ("authors-code", "rank")
    assert configs["rank"].reward.normalization == "rank"
    assert (configs["rank-lambda-1"].reward.normalization, configs["rank-lambda-1"].reward.lam) == (
        "rank",
        1.0,
    )
    for name, config in configs.items():  # everything else stays as in csr
        if not name.endswith(("lambda-0", "lambda-1")):
            assert config.reward.lam == 0.9, name


def test_unknown_variants_and_bad_plans_are_named():
    with pytest.raises(ExperimentError, match="unknown variant 'lambda-2'; choose from csr"):
        algorithm_settings("lambda-2", 0, RunPlan())
    with pytest.raises(ExperimentError, match="prompts=0"):
        RunPlan(prompts=0)
    with pytest.raises(ExperimentError, match="iterations=0"):
        RunPlan(iterations=0)


def _evaluation(chair_s, recall):
    pope = {"accuracy": 0.5, "f1": 0.4}
    return {
        "chair": {
            "chair_s": chair_s,
            "chair_i": chair_s / 2,
            "recall": recall,
            "mean_sentences": 2.0,
        },
        "pope": {"adversarial": pope},
    }


def test_spread_is_the_mean_with_its_95_percent_confidence_interval():
    s = spread([0.2, 0.4, 0.6])
    assert (s.mean, s.n) == (pytest.approx(0.4), 3)
    assert s.std == pytest.approx(math.sqrt((0.04 + 0 + 0.04) / 2))  # 0.2
    # t(0.975, 2 df) = 4.303: 4.303 * 0.2 / sqrt(3) = 0.4969
    assert s.ci95 == pytest.approx(0.4969, abs=1e-4)
    assert (s.low, s.high) == (pytest.approx(-0.0969, abs=1e-4), pytest.approx(0.8969, abs=1e-4))
    assert str(s) == "0.400 ± 0.497" and str(spread([0.25])) == "0.250"
    assert spread([0.25]).ci95 == 0
    with pytest.raises(ValueError, match="at least one"):
        spread([])


def test_t_quantiles_match_the_tables_and_approach_the_normal():
    assert t975(1) == 12.706 and t975(9) == 2.262 and t975(30) == 2.042
    assert t975(40) == pytest.approx(2.021, abs=1e-3)  # the table value
    assert t975(120) == pytest.approx(1.980, abs=1e-3)
    with pytest.raises(ValueError, match="two seeds"):
        t975(0)


def test_changes_and_ratios_are_taken_seed_by_seed():
    runs = [
        [_evaluation(0.5, 0.9), _evaluation(0.3, 0.8), _evaluation(0.2, 0.85)],
        [_evaluation(0.4, 0.9), _evaluation(0.1, 0.9), _evaluation(0.2, 0.7)],
    ]
    step = change(runs, 1, 2)  # 0.3 -> 0.2 and 0.1 -> 0.2: -0.1 and +0.1
    assert step["CHAIR_s"].mean == pytest.approx(0.0)
    assert step["CHAIR_s"].std == pytest.approx(math.sqrt(0.02))
    assert change(runs, 0, 2)["recall"].mean == pytest.approx((-0.05 - 0.2) / 2)
    assert ratio(runs, 2, "CHAIR_s").mean == pytest.approx((0.4 + 0.5) / 2)
    rows = progress_rows(runs)
    assert [label for label, _ in rows] == ["iteration 1", "iteration 2"]
    assert rows[1][1]["worst seed"].mean == pytest.approx(0.5)
    assert rows[0][1]["CHAIR_s change"].mean == pytest.approx((-0.2 - 0.3) / 2)
    text = progress_markdown(rows)
    assert "| iteration 2 | 0.450 ± 0.635 | 0.500 | +0.000 ± 1.271 |" in text


def test_the_seed_table_has_each_seed_at_every_iteration_and_its_last_over_its_base():
    runs = [
        [_evaluation(0.5, 0.9), _evaluation(0.3, 0.8), _evaluation(0.2, 0.85)],
        [_evaluation(0.4, 0.9), _evaluation(0.1, 0.9), _evaluation(0.3, 0.7)],
    ]
    text = seed_markdown([7, 9], runs)
    assert text.splitlines()[0] == (
        "| seed | CHAIR_s base | iteration 1 | iteration 2 | 2 / base | recall base | "
        "recall 2 | POPE acc base | POPE acc 2 |"
    )
    # 0.2 / 0.5 = 0.40 and 0.3 / 0.4 = 0.75
    assert "| 7 | 0.500 | 0.300 | 0.200 | 0.40 | 0.900 | 0.850 | 0.500 | 0.500 |" in text
    assert "| 9 | 0.400 | 0.100 | 0.300 | 0.75 | 0.900 | 0.700 | 0.500 | 0.500 |" in text
    assert text in markdown(table_rows({"csr": runs}), 2, by_seed=text)


def test_table_rows_base_then_every_csr_iteration_then_each_variant_at_its_last():
    runs = {
        "csr": [
            [_evaluation(0.5, 0.9), _evaluation(0.3, 0.8), _evaluation(0.2, 0.8)],
            [_evaluation(0.4, 0.9), _evaluation(0.1, 0.9), _evaluation(0.1, 0.7)],
        ],
        "lambda-0": [
            [_evaluation(0.5, 0.9), _evaluation(0.5, 0.9), _evaluation(0.6, 0.9)],
            [_evaluation(0.4, 0.9), _evaluation(0.4, 0.9), _evaluation(0.4, 0.9)],
        ],
    }
    rows = table_rows(runs)
    assert [label for label, _ in rows] == [
        "base model",
        "csr, iteration 1",
        "csr, iteration 2",
        "lambda-0, iteration 2",
    ]
    assert rows[0][1]["CHAIR_s"].mean == pytest.approx(0.45)
    assert rows[2][1]["CHAIR_s"].mean == pytest.approx(0.15)
    assert rows[2][1]["recall"].mean == pytest.approx(0.75)
    assert rows[3][1]["CHAIR_s"].mean == pytest.approx(0.5)
    assert summarise(runs["csr"], 1)["CHAIR_i"].mean == pytest.approx(0.1)
    text = markdown(rows, 2)
    assert "| csr, iteration 2 | 0.150 ± 0.635 |" in text and "over 2 seeds" in text
    assert "- sum did not finish (seed 1): no pairs" in markdown(rows, 2, {"sum": {1: "no pairs"}})
    with pytest.raises(ValueError, match="iteration 5 is not there"):
        summarise(runs["csr"], 5)


def test_a_run_resumes_only_with_the_same_settings_and_models(tmp_path):
    from toyworld.experiment import _start_afresh_unless

    wanted = {"variant": "csr", "models": {"vlm": "ab12"}}
    _start_afresh_unless(tmp_path, wanted)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "redis.db").write_text("pairs")
    _start_afresh_unless(tmp_path, wanted)  # same: an interrupted run goes on
    assert (tmp_path / "run" / "redis.db").read_text() == "pairs"
    (tmp_path / "eval.json").write_text("{}")
    _start_afresh_unless(tmp_path, {**wanted, "models": {"vlm": "cd34"}})  # models rebuilt
    assert not (tmp_path / "run").exists() and not (tmp_path / "eval.json").exists()


def test_another_evaluation_evaluates_the_adapters_again_without_running_again(
    tmp_path, monkeypatch
):
    from types import SimpleNamespace

    from toyworld import build, experiment

    models = SimpleNamespace(clip=tmp_path / "c", vlm=tmp_path / "v", record={"sha256": {"v": 1}})
    monkeypatch.setattr(build, "build_toyworld", lambda *a, **k: models)
    (tmp_path / "models" / "seed-0").mkdir(parents=True)
    monkeypatch.setattr(experiment, "write_prompt_set", lambda *a, **k: tmp_path / "p.json")
    evaluated, found = [], []

    def evaluate(vlm, adapter, count):
        evaluated.append((adapter, count))
        return {"count": count}

    def run_stack(config_path, iterations, console):
        run = config_path.parent / "run"
        found.append((run / "redis.db").exists())  # the pairs and adapters of a run before
        run.mkdir(exist_ok=True)
        (run / "redis.db").write_text("pairs")
        return [run / "adapters" / str(t) for t in range(1, iterations + 1)]

    monkeypatch.setattr(experiment, "_evaluate", evaluate)
    monkeypatch.setattr(experiment, "run_stack", run_stack)
    console = SimpleNamespace(print=lambda *a: None)
    experiment.run_variant(tmp_path, "csr", 0, RunPlan(iterations=1, eval_scenes=10), console)
    again = experiment.run_variant(
        tmp_path, "csr", 0, RunPlan(iterations=1, eval_scenes=20), console
    )
    assert [count for _, count in evaluated] == [10, 10, 20, 20]  # base and adapter 1, twice
    assert [e["count"] for e in again.evaluations] == [20, 20]
    assert found == [False, True]  # the second evaluation found the first's run, kept
    evaluated.clear()
    experiment.run_variant(tmp_path, "csr", 0, RunPlan(iterations=1, eval_scenes=20), console)
    assert evaluated == []  # current: nothing evaluated again


def test_agreement_command_names_what_it_cannot_compare(tmp_path):
    from typer.testing import CliRunner

    from csr_cli.main import app

    runner = CliRunner()
    env = {"COLUMNS": "200"}
    result = runner.invoke(
        app, ["toyworld", "agreement", "--out", str(tmp_path), "--variant", "csr"], env=env
    )
    assert result.exit_code == 2 and "name two variants or more" in result.output
    result = runner.invoke(
        app,
        [
            "toyworld",
            "agreement",
            "--out",
            str(tmp_path),
            "--variant",
            "csr",
            "--variant",
            "lambda-2",
        ],
        env=env,
    )
    assert result.exit_code == 2 and "unknown variant 'lambda-2'" in result.output
    result = runner.invoke(
        app, ["toyworld", "agreement", "--out", str(tmp_path), "--adapter", str(tmp_path)], env=env
    )
    assert result.exit_code == 2 and "holds no adapter_config.json" in result.output
    assert not (tmp_path / "models").exists()  # refused before building anything
