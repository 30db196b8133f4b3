"""Algorithm settings of CSR: frozen dataclasses, one default each, validated on construction.

Owns every knob of the method (search, reward, selection, DPO, iterations). Deployment
settings (addresses, paths, tokens) are not here: each service reads those from the
environment through its own pydantic-settings class.

Defaults follow the paper (Zhou et al., 2024) unless a measurement showed otherwise; where
they differ, the field's docstring says why. `CSRConfig.authors_code()` builds the settings
that reproduce the authors' released code instead (github.com/YiyangZhou/CSR).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

from csr.errors import ConfigError

SearchMode = Literal["paper", "authors-code"]
Expansion = Literal["group-beam", "beam", "sample"]
SelfScore = Literal["product", "mean-logprob"]
Normalization = Literal["raw", "rank"]
Aggregation = Literal["sum", "mean"]

SEARCH_MODES: tuple[str, ...] = ("paper", "authors-code")
EXPANSIONS: tuple[str, ...] = ("group-beam", "beam", "sample")
SELF_SCORES: tuple[str, ...] = ("product", "mean-logprob")
NORMALIZATIONS: tuple[str, ...] = ("raw", "rank")
AGGREGATIONS: tuple[str, ...] = ("sum", "mean")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _require_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    _require(value in choices, f"{name}={value!r} is not one of {', '.join(choices)}")


def _require_int_at_least(name: str, value: int, minimum: int) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    _require(ok, f"{name}={value!r} must be an integer >= {minimum}")


def _require_finite(name: str, value: float, low: float, high: float) -> None:
    ok = isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high
    _require(ok, f"{name}={value!r} must be a finite number in [{low}, {high}]")


@dataclass(frozen=True)
class SearchConfig:
    """Sentence-level search (Algorithm 1) and its token-level expansion.

    mode: "paper" lets the calibrated reward R choose which prefixes survive every step
        (Algorithm 1). "authors-code" keeps prefixes by the running sum of the self score
        R_T alone and applies R_I to the finished tree afterwards, as the released code does.
    keep_top / keep_bottom: unfinished prefixes kept per step, best and worst by cumulative
        reward. The paper says "top-k and bottom-k"; the released code keeps the top 1 and
        bottom 2 of 5 (`num_beams/2 - 1` and `num_beams/2`), which these defaults copy.
    num_beams / num_beam_groups / diversity_penalty: diverse group beam search per prefix
        (the paper's 5, 5, 3.0); with "beam" the groups are ignored, with "sample" num_beams
        candidates are drawn at `temperature`, reproducibly from `seed` (each prefix draws
        from its own generator, so batching does not change the samples).
    sentence_end: the marker that ends a sentence; a candidate stopped by the token cap
        without it finishes its response rather than being continued mid-sentence.
    max_new_tokens: tokens per candidate sentence (the paper: 74).
    max_sentences / max_response_tokens: caps per response. The released code stops at
        1,024 characters of prompt plus response, about 250 tokens of response for LLaVA.
    min_words: a candidate with fewer words is a fragment, not a sentence, and is dropped
        (1, the default, keeps any candidate with a letter or digit). Diverse beam search
        forces later groups off the likeliest token; a model that knows one way to begin a
        sentence then offers fragments ("No.", "cross.") that CLIP scores 0, and they crowd
        out the hallucinated prefixes the bottom-k places are for. Keep 1 for models whose
        output has short items (LLaVA's "1." list numbers would be dropped at 2).
    """

    mode: SearchMode = "paper"
    keep_top: int = 1
    keep_bottom: int = 2
    expansion: Expansion = "group-beam"
    num_beams: int = 5
    num_beam_groups: int = 5
    diversity_penalty: float = 3.0
    temperature: float = 1.0
    seed: int = 0
    sentence_end: str = "."
    max_new_tokens: int = 74
    max_sentences: int = 16
    max_response_tokens: int = 256
    min_words: int = 1

    def __post_init__(self) -> None:
        _require_choice("mode", self.mode, SEARCH_MODES)
        _require_choice("expansion", self.expansion, EXPANSIONS)
        _require_int_at_least("keep_top", self.keep_top, 0)
        _require_int_at_least("keep_bottom", self.keep_bottom, 0)
        _require(self.keep_top + self.keep_bottom >= 1,
                 "keep_top + keep_bottom must be >= 1, or no prefix would survive a step")
        _require_int_at_least("num_beams", self.num_beams, 1)
        _require_int_at_least("num_beam_groups", self.num_beam_groups, 1)
        if self.expansion == "group-beam":
            _require(self.num_beams % self.num_beam_groups == 0,
                     f"num_beams={self.num_beams} must be a multiple of "
                     f"num_beam_groups={self.num_beam_groups}")
        _require_finite("diversity_penalty", self.diversity_penalty, 0.0, 1e6)
        _require_finite("temperature", self.temperature, 1e-6, 1e6)
        _require_int_at_least("seed", self.seed, 0)
        _require(isinstance(self.sentence_end, str) and self.sentence_end.strip() != ""
                 and self.sentence_end == self.sentence_end.strip(),
                 f"sentence_end={self.sentence_end!r} must be a non-blank string without "
                 "surrounding spaces, such as '.'")
        _require_int_at_least("max_new_tokens", self.max_new_tokens, 1)
        _require_int_at_least("max_sentences", self.max_sentences, 1)
        _require_int_at_least("max_response_tokens", self.max_response_tokens, 1)
        _require_int_at_least("min_words", self.min_words, 1)


@dataclass(frozen=True)
class RewardConfig:
    """The calibrated sentence reward R(s) = lam * R_I(s) + (1 - lam) * R_T(s) (Eq. 4).

    lam: weight of the image-relevance reward (the paper: 0.9). Mind the scales: R_I spans
        0-100 while R_T is a probability (or a mean log-probability of a few units), so at 0.9
        R_T only breaks near-ties: two candidates swap only if their R_I differ by less than
        (1 - lam) / lam * (their R_T gap), 0.11 for products; with ranks, never among 5
        siblings. In the toy world 99 % of the pairs at 0.9 are the pairs at 1.0 (README, "The
        toy world"; `csr toyworld agreement` measures it for any two variants).
    self_score: R_T's definition. "product" is the paper's product of token probabilities
        (Eq. 2); "mean-logprob" is the length-normalised log-probability that the released
        code gets from beam search's `sequences_scores`.
    normalization: "raw" combines the values themselves (the paper). "rank" replaces R_T and
        R_I by their ranks among sibling candidates (best of n = 1/n, worst = 1) before
        combining, as the released code does; see `csr.rewards.sibling_ranks`.
    end_relevance: None (the paper and the released code say nothing of it) lets a response
        end for free: the end-of-response candidate adds no sentence, so the path keeps the
        reward of what it said. A number scores the end as a sentence of its own, with R_T
        from the end token's probability (the model's own wish to stop) and this R_I; it then
        competes with the sibling sentences and counts in the path's reward, so under the
        path mean another sentence is worth writing only if it scores above stopping.
    relevance_baseline: b in a sentence's merit lam * (R_I - b) + (1 - lam) * R_T (raw
        normalization; 0 is the paper's merit R). Under the path sum, a sentence then adds to
        its path only if CLIP finds it more relevant than b: a true object pays, an absent one
        costs, and stopping is free. The sum of the paper's R, always >= 0, pays for length
        instead. The mean ignores b (it shifts every path alike). Set b between the CLIP's
        usual R_I for present and absent objects; it depends on the CLIP, so 0 is the default.
    """

    lam: float = 0.9
    self_score: SelfScore = "product"
    normalization: Normalization = "raw"
    end_relevance: float | None = None
    relevance_baseline: float = 0.0

    def __post_init__(self) -> None:
        _require_finite("lam", self.lam, 0.0, 1.0)
        _require_finite("relevance_baseline", self.relevance_baseline, 0.0, 100.0)
        _require(self.relevance_baseline == 0 or self.normalization == "raw",
                 f"relevance_baseline={self.relevance_baseline!r} has no effect with "
                 "normalization='rank' (ranks ignore it); set it to 0 or use 'raw'")
        if self.end_relevance is not None:
            _require_finite("end_relevance", self.end_relevance, 0.0, 100.0)
        _require_choice("self_score", self.self_score, SELF_SCORES)
        _require_choice("normalization", self.normalization, NORMALIZATIONS)


@dataclass(frozen=True)
class SelectionConfig:
    """How a path's sentence rewards add up, for pruning and for picking the pair.

    aggregation: "mean" (default) divides the path's summed reward by its number of
        sentences, as the released code does; "sum" is the paper's cumulative reward.
        The default departs from the paper on purpose: in a measured study (toy world,
        shared/design/toy-world.md) the sum rewarded length, because a sentence about an
        absent object still often earns R_I > 0, so chosen captions grew and hallucination
        rose (CHAIR_s 0.79 against the base model's 0.53), while the mean cut it to 0.28.
        The project's toy world (README, "The toy world") measured it again over 3 iterations
        and 3 seeds: the sum 0.428 -> 0.963, the mean with a scored end 0.428 -> 0.198.
    """

    aggregation: Aggregation = "mean"

    def __post_init__(self) -> None:
        _require_choice("aggregation", self.aggregation, AGGREGATIONS)


LANGUAGE_MODEL_LINEAR_LAYERS = (
    r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
)


@dataclass(frozen=True)
class DPOSettings:
    """DPO with LoRA on the language model (Eq. 5), the reference being the previous iteration.

    beta: DPO temperature (TRL's default 0.1; the released code passes none, so TRL's applies).
    lora_r / lora_alpha / lora_dropout: the released training script's 128 / 256 / 0.05.
    target_modules: a regex over module names (PEFT full-match) that selects the language
        model's linear layers and leaves the vision tower and projector frozen.
    learning_rate: the released script's 1e-7 (cosine, 3% warm-up) for LLaVA-1.5-7B. Tiny
        models need far more: the toy-world study found 5e-4 works and 2e-3 collapses.
    """

    beta: float = 0.1
    lora_r: int = 128
    lora_alpha: int = 256
    lora_dropout: float = 0.05
    target_modules: str = LANGUAGE_MODEL_LINEAR_LAYERS
    learning_rate: float = 1e-7
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    epochs: int = 1
    batch_size: int = 1
    gradient_accumulation_steps: int = 1

    def __post_init__(self) -> None:
        _require_finite("beta", self.beta, 1e-9, 1e6)
        _require_int_at_least("lora_r", self.lora_r, 1)
        _require_int_at_least("lora_alpha", self.lora_alpha, 1)
        _require_finite("lora_dropout", self.lora_dropout, 0.0, 0.999)
        _require(isinstance(self.target_modules, str) and self.target_modules != "",
                 "target_modules must be a non-empty module-name regex")
        _require_finite("learning_rate", self.learning_rate, 1e-12, 1.0)
        _require_finite("warmup_ratio", self.warmup_ratio, 0.0, 1.0)
        _require_int_at_least("epochs", self.epochs, 1)
        _require_int_at_least("batch_size", self.batch_size, 1)
        _require_int_at_least("gradient_accumulation_steps", self.gradient_accumulation_steps, 1)


SCHEDULES = ("iteration", "online")
Schedule = Literal["iteration", "online"]


@dataclass(frozen=True)
class ScheduleConfig:
    """When the trainer updates the model, and which pairs it still accepts.

    schedule: "iteration" is the paper's loop: the generators build the pairs of the whole
        prompt set with adapter t-1, the trainer trains once on all of them, publishes adapter
        t, and the generators start iteration t+1 on the same prompts with it. "online"
        trains on every `online_every` pairs as they arrive, publishing a version each time;
        the prompt set still advances an iteration when all its prompts are done.
    max_staleness: a pair made by adapter version v is used only while the trainer's current
        version is at most v + max_staleness; older pairs are dropped and counted (online
        training; in the iteration schedule every pair of iteration t is made by version t-1).
    """

    schedule: Schedule = "iteration"
    online_every: int = 64
    max_staleness: int = 1

    def __post_init__(self) -> None:
        _require_choice("schedule", self.schedule, SCHEDULES)
        _require_int_at_least("online_every", self.online_every, 1)
        _require_int_at_least("max_staleness", self.max_staleness, 0)


@dataclass(frozen=True)
class CSRConfig:
    """Everything the method needs: T iterations of search, reward, selection and DPO."""

    iterations: int = 3
    search: SearchConfig = field(default_factory=SearchConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    dpo: DPOSettings = field(default_factory=DPOSettings)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    def __post_init__(self) -> None:
        _require_int_at_least("iterations", self.iterations, 1)
        for name, kind in (("search", SearchConfig), ("reward", RewardConfig),
                           ("selection", SelectionConfig), ("dpo", DPOSettings),
                           ("schedule", ScheduleConfig)):
            _require(isinstance(getattr(self, name), kind),
                     f"{name} must be a {kind.__name__}, got {type(getattr(self, name)).__name__}")

    @classmethod
    def from_dict(cls, data: dict) -> CSRConfig:
        """A config from plain data (a YAML or JSON file's): `preset` ("paper" or
        "authors-code") picks the base, then `iterations` and the sections `search`,
        `reward`, `selection`, `dpo`, `schedule` override single fields. Unknown keys are
        refused by name."""
        if not isinstance(data, dict):
            raise ConfigError(f"an algorithm config is a mapping, not {type(data).__name__}")
        sections = {"search": SearchConfig, "reward": RewardConfig, "selection": SelectionConfig,
                    "dpo": DPOSettings, "schedule": ScheduleConfig}
        unknown = set(data) - {"preset", "iterations", *sections}
        _require(not unknown, f"unknown algorithm config keys {sorted(unknown)}; use preset, "
                 f"iterations, {', '.join(sections)}")
        preset = data.get("preset", "paper")
        _require(preset in ("paper", "authors-code"),
                 f"preset={preset!r} must be 'paper' or 'authors-code'")
        config = cls.authors_code() if preset == "authors-code" else cls()
        changes = {}
        for name, kind in sections.items():
            fields = data.get(name) or {}
            _require(isinstance(fields, dict), f"{name} must be a mapping of its fields")
            known = set(kind.__dataclass_fields__)
            strange = set(fields) - known
            _require(not strange, f"{name} has no fields {sorted(strange)}; it has "
                     f"{', '.join(sorted(known))}")
            if fields:
                changes[name] = replace(getattr(config, name), **fields)
        if "iterations" in data:
            changes["iterations"] = data["iterations"]
        return replace(config, **changes)

    @classmethod
    def authors_code(cls) -> CSRConfig:
        """The released code's behaviour: self-score search, ranks, path mean, 70 tokens."""
        base = cls()
        return replace(
            base,
            search=replace(base.search, mode="authors-code", max_new_tokens=70),
            reward=replace(base.reward, self_score="mean-logprob", normalization="rank"),
            selection=SelectionConfig(aggregation="mean"),
        )
