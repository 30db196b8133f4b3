"""Algorithm settings: the paper's defaults, validation that names the bad value."""

import dataclasses

import pytest

from csr.config import CSRConfig, DPOSettings, RewardConfig, SearchConfig, SelectionConfig
from csr.errors import ConfigError


def test_defaults_are_the_papers_except_the_documented_path_mean():
    config = CSRConfig()
    assert config.iterations == 3
    assert (config.search.num_beams, config.search.num_beam_groups) == (5, 5)
    assert config.search.diversity_penalty == 3.0
    assert config.search.sentence_end == "."
    assert config.search.max_new_tokens == 74
    assert config.search.mode == "paper"
    assert config.reward.lam == 0.9
    assert config.reward.self_score == "product"
    assert config.reward.normalization == "raw"
    assert config.selection.aggregation == "mean"
    assert "Summing R along a path rewards length" in SelectionConfig.__doc__
    # the paper says nothing of these: off by default
    assert (config.reward.end_relevance, config.reward.relevance_baseline) == (None, 0.0)
    assert config.search.min_words == 1
    assert (config.dpo.beta, config.dpo.lora_r, config.dpo.lora_alpha) == (0.1, 128, 256)


def test_authors_code_preset():
    config = CSRConfig.authors_code()
    assert config.search.mode == "authors-code"
    assert config.search.max_new_tokens == 70
    assert config.reward.normalization == "rank"
    assert config.reward.self_score == "mean-logprob"
    assert config.selection.aggregation == "mean"


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        SearchConfig().num_beams = 3


@pytest.mark.parametrize(
    "kind,kwargs,named",
    [
        (SearchConfig, {"mode": "greedy"}, "mode='greedy'"),
        (SearchConfig, {"num_beams": 6, "num_beam_groups": 4}, "num_beams=6"),
        (SearchConfig, {"num_beams": 0}, "num_beams=0"),
        (SearchConfig, {"keep_top": 0, "keep_bottom": 0}, "keep_top \\+ keep_bottom"),
        (SearchConfig, {"keep_top": -1}, "keep_top=-1"),
        (SearchConfig, {"diversity_penalty": -1.0}, "diversity_penalty=-1.0"),
        (SearchConfig, {"sentence_end": " "}, "sentence_end"),
        (SearchConfig, {"sentence_end": ". "}, "without surrounding spaces"),
        (SearchConfig, {"max_new_tokens": 0}, "max_new_tokens=0"),
        (SearchConfig, {"max_sentences": 2.5}, "max_sentences=2.5"),
        (SearchConfig, {"expansion": "nucleus"}, "expansion='nucleus'"),
        (RewardConfig, {"lam": 1.5}, "lam=1.5"),
        (RewardConfig, {"lam": float("nan")}, "lam=nan"),
        (RewardConfig, {"self_score": "sum"}, "self_score='sum'"),
        (RewardConfig, {"normalization": "zscore"}, "normalization='zscore'"),
        (SelectionConfig, {"aggregation": "max"}, "aggregation='max'"),
        (SelectionConfig, {"min_margin": -1.0}, "min_margin=-1.0"),
        (SearchConfig, {"min_words": 0}, "min_words=0"),
        (RewardConfig, {"end_relevance": -1.0}, "end_relevance=-1.0"),
        (RewardConfig, {"end_relevance": float("inf")}, "end_relevance=inf"),
        (RewardConfig, {"relevance_baseline": 101.0}, "relevance_baseline=101.0"),
        (RewardConfig, {"relevance_baseline": 40.0, "normalization": "rank"}, "no effect with"),
        (DPOSettings, {"beta": 0.0}, "beta=0.0"),
        (DPOSettings, {"lora_r": 0}, "lora_r=0"),
        (DPOSettings, {"epochs": True}, "epochs=True"),
        (CSRConfig, {"iterations": 0}, "iterations=0"),
        (CSRConfig, {"search": RewardConfig()}, "search must be a SearchConfig"),
    ],
)
def test_bad_settings_are_refused_by_name(kind, kwargs, named):
    with pytest.raises(ConfigError, match=named):
        kind(**kwargs)


def test_group_beam_divisibility_is_only_checked_for_group_beam():
    assert SearchConfig(expansion="sample", num_beams=6, num_beam_groups=4).num_beams == 6


def test_algorithm_settings_from_plain_data():
    from csr.config import CSRConfig

    config = CSRConfig.from_dict(
        {
            "preset": "authors-code",
            "iterations": 2,
            "search": {"expansion": "sample", "temperature": 0.7},
            "reward": {"lam": 0.0},
            "dpo": {"learning_rate": 5e-4},
        }
    )
    assert config.search.mode == "authors-code" and config.search.max_new_tokens == 70
    assert (config.search.expansion, config.search.temperature) == ("sample", 0.7)
    assert config.reward.lam == 0.0 and config.reward.normalization == "rank"
    assert config.dpo.learning_rate == 5e-4 and config.iterations == 2
    assert CSRConfig.from_dict({}) == CSRConfig()
    with pytest.raises(ValueError, match=r"unknown algorithm config keys \['serch'\]"):
        CSRConfig.from_dict({"serch": {}})
    with pytest.raises(ValueError, match=r"search has no fields \['beams'\]"):
        CSRConfig.from_dict({"search": {"beams": 3}})
    with pytest.raises(ValueError, match="lam"):
        CSRConfig.from_dict({"reward": {"lam": 2.0}})
