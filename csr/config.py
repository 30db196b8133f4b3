"""Algorithm settings of CSR: frozen dataclasses, one default each, validated on construction.

Owns every knob of the method (search, reward, selection, DPO, iterations). Deployment
settings (addresses, paths, tokens) are not here: each service reads those from the
environment through its own pydantic-settings class.

Each field is declared once, with its default and its help text (`setting`); the README's
table and examples/algorithm-reference.yaml are generated from them. Defaults follow the paper
(Zhou et al., 2024) unless a measurement showed otherwise; where they differ, the class
docstring says why. `CSRConfig.authors_code()` builds the settings
that reproduce the authors' released code instead (github.com/YiyangZhou/CSR).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from csr.errors import ConfigError

SearchMode = Literal["paper", "authors-code"]
Expansion = Literal["group-beam", "beam", "sample"]
SelfScore = Literal["product", "mean-logprob"]
Normalization = Literal["raw", "rank"]
Aggregation = Literal["sum", "mean"]
GapSentences = Literal["worst", "unshared"]

SEARCH_MODES: tuple[str, ...] = ("paper", "authors-code")
EXPANSIONS: tuple[str, ...] = ("group-beam", "beam", "sample")
SELF_SCORES: tuple[str, ...] = ("product", "mean-logprob")
NORMALIZATIONS: tuple[str, ...] = ("raw", "rank")
AGGREGATIONS: tuple[str, ...] = ("sum", "mean")
GAP_SENTENCES: tuple[str, ...] = ("worst", "unshared")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _require_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    _require(value in choices, f"{name}={value!r} is not one of {', '.join(choices)}")


def _require_int_at_least(name: str, value: int, minimum: int) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    _require(ok, f"{name}={value!r} must be an integer >= {minimum}")


def _require_finite(name: str, value: float, low: float, high: float) -> None:
    ok = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and low <= value <= high
    )
    hint = " (YAML reads 1e-7 as text: write 1.0e-7)" if isinstance(value, str) else ""
    _require(ok, f"{name}={value!r} must be a finite number in [{low}, {high}]{hint}")


def setting(default: Any, help: str) -> Any:
    """A field with one default and its help text, which the README table and the YAML
    reference are generated from (services.runtime.docs)."""
    return field(default=default, metadata={"help": help})


def section(kind: type, help: str) -> Any:
    """A nested section of settings (CSRConfig.search, .reward, ...)."""
    return field(default_factory=kind, metadata={"help": help})


@dataclass(frozen=True)
class SearchConfig:
    """Sentence-level search (Algorithm 1) and its token-level expansion."""

    mode: SearchMode = setting(
        "paper",
        "paper: the calibrated reward R picks the prefixes kept at every step "
        "(Algorithm 1). authors-code: prefixes kept by the running sum of R_T alone, R_I "
        "applied to the finished tree, as the released code does.",
    )
    keep_top: int = setting(
        1,
        "Unfinished prefixes kept per step, best by cumulative reward (the released "
        "code's num_beams/2 - 1).",
    )
    keep_bottom: int = setting(
        2,
        "Unfinished prefixes kept per step, worst by cumulative reward (the released "
        "code's num_beams/2).",
    )
    expansion: Expansion = setting(
        "group-beam",
        "group-beam: diverse group beam search (the paper); beam: plain beam "
        "search (groups ignored); sample: num_beams candidates drawn at temperature.",
    )
    num_beams: int = setting(5, "Candidate sentences per kept prefix (the paper: 5).")
    num_beam_groups: int = setting(
        5, "Beam groups of diverse beam search (the paper: 5); num_beams must be a multiple."
    )
    diversity_penalty: float = setting(
        3.0, "Hamming diversity penalty between beam groups (the paper: 3.0)."
    )
    temperature: float = setting(1.0, "Sampling temperature (expansion: sample).")
    seed: int = setting(
        0,
        "Seed of sampled expansion: each prefix draws from its own "
        "generator seeded from this and the prefix, so batching does not "
        "change the samples.",
    )
    sentence_end: str = setting(
        ".",
        "The marker that ends a sentence; a candidate stopped by the token cap without "
        "it finishes its response instead of being continued mid-sentence.",
    )
    max_new_tokens: int = setting(
        74, "Tokens per candidate sentence, at most (the paper: 74; the released code: 70)."
    )
    max_sentences: int = setting(16, "Sentences per response, at most.")
    max_response_tokens: int = setting(
        256,
        "Tokens per response, at most (the released code stops at 1,024 characters of "
        "prompt plus response, about 250 tokens of response for LLaVA).",
    )
    min_words: int = setting(
        1,
        "A candidate with fewer words is a fragment and is dropped (1 keeps any "
        "candidate with a letter or digit). Raise it for a model whose diverse beam groups, "
        "forced off its one way to begin a sentence, offer fragments such as 'No.' that "
        "crowd out the bottom places; keep 1 where outputs have short items ('1.' list "
        "numbers).",
    )
    min_relevance: float = setting(
        0.0,
        "Paper mode: a candidate whose R_I is below this is dropped, as text the CLIP relates "
        "to nothing in the image (0 keeps every candidate, the paper's rule). Raise it above 0 "
        "for a model whose diverse beam groups, once training has sharpened its one way to "
        "begin a sentence, offer garbled text (byte fragments before 'There is a ...') that "
        "the CLIP scores 0 and that would otherwise fill the bottom places, so that the "
        "rejected responses stay descriptions. The toy world measured it (README, "
        "'Results'): it is off there too.",
    )

    def __post_init__(self) -> None:
        _require_choice("mode", self.mode, SEARCH_MODES)
        _require_choice("expansion", self.expansion, EXPANSIONS)
        _require_int_at_least("keep_top", self.keep_top, 0)
        _require_int_at_least("keep_bottom", self.keep_bottom, 0)
        _require(
            self.keep_top + self.keep_bottom >= 1,
            "keep_top + keep_bottom must be >= 1, or no prefix would survive a step",
        )
        _require_int_at_least("num_beams", self.num_beams, 1)
        _require_int_at_least("num_beam_groups", self.num_beam_groups, 1)
        if self.expansion == "group-beam":
            _require(
                self.num_beams % self.num_beam_groups == 0,
                f"num_beams={self.num_beams} must be a multiple of "
                f"num_beam_groups={self.num_beam_groups}",
            )
        _require_finite("diversity_penalty", self.diversity_penalty, 0.0, 1e6)
        _require_finite("temperature", self.temperature, 1e-6, 1e6)
        _require_int_at_least("seed", self.seed, 0)
        _require(
            isinstance(self.sentence_end, str)
            and self.sentence_end.strip() != ""
            and self.sentence_end == self.sentence_end.strip(),
            f"sentence_end={self.sentence_end!r} must be a non-blank string without "
            "surrounding spaces, such as '.'",
        )
        _require_int_at_least("max_new_tokens", self.max_new_tokens, 1)
        _require_int_at_least("max_sentences", self.max_sentences, 1)
        _require_int_at_least("max_response_tokens", self.max_response_tokens, 1)
        _require_int_at_least("min_words", self.min_words, 1)
        _require_finite("min_relevance", self.min_relevance, 0.0, 100.0)
        _require(
            self.min_relevance == 0.0 or self.mode == "paper",
            f"min_relevance={self.min_relevance} needs mode 'paper': in {self.mode!r} mode R_I "
            "is computed after the search, so it cannot drop candidates; set it to 0",
        )


@dataclass(frozen=True)
class RewardConfig:
    """The calibrated sentence reward R(s) = lam * R_I(s) + (1 - lam) * R_T(s) (Eq. 4).

    Mind the scales: R_I spans 0-100 while R_T is a probability (or a mean log-probability
    of a few units), so at lam = 0.9 R_T only breaks near-ties: two candidates swap only if
    their R_I differ by less than (1 - lam) / lam times their R_T gap (0.11 for products);
    with ranks, never among 5 siblings. `csr toyworld agreement` measures how many pairs two
    settings share.
    """

    lam: float = setting(
        0.9,
        "Weight of the image relevance R_I in R (the paper: 0.9); 0 is "
        "self-reward only, 1 relevance only.",
    )
    self_score: SelfScore = setting(
        "product",
        "R_T: product is the paper's product of token probabilities (Eq. 2); "
        "mean-logprob the length-normalised log-probability the released code gets from "
        "beam search's sequences_scores.",
    )
    normalization: Normalization = setting(
        "raw",
        "raw: combine the values themselves (the paper). rank: replace R_T and R_I by "
        "their ranks among sibling candidates (best of n = 1/n, worst = 1) first, as the "
        "released code does.",
    )
    end_relevance: float | None = setting(
        None,
        "null: a response ends for free (the path keeps the reward of what it said). A "
        "number scores the end as a sentence of its own, with R_T from the end token's "
        "probability and this R_I, so under the path mean another sentence is worth writing "
        "only if it scores above stopping. Set it between the CLIP's usual R_I for present "
        "and absent objects.",
    )
    relevance_baseline: float = setting(
        0.0,
        "b in a sentence's merit lam * (R_I - b) + (1 - lam) * R_T (raw normalization). "
        "Under the path sum a sentence then adds only if CLIP finds it more relevant than b, "
        "so length is no longer paid for; the mean ignores b. Depends on the CLIP.",
    )

    def __post_init__(self) -> None:
        _require_finite("lam", self.lam, 0.0, 1.0)
        _require_finite("relevance_baseline", self.relevance_baseline, 0.0, 100.0)
        _require(
            self.relevance_baseline == 0 or self.normalization == "raw",
            f"relevance_baseline={self.relevance_baseline!r} has no effect with "
            "normalization='rank' (ranks ignore it); set it to 0 or use 'raw'",
        )
        if self.end_relevance is not None:
            _require_finite("end_relevance", self.end_relevance, 0.0, 100.0)
        _require_choice("self_score", self.self_score, SELF_SCORES)
        _require_choice("normalization", self.normalization, NORMALIZATIONS)


@dataclass(frozen=True)
class SelectionConfig:
    """How a path's sentence rewards add up, for pruning and for picking the pair.

    The default departs from the paper on purpose. Summing R along a path rewards length:
    a sentence about an absent object still often earns R_I > 0, so the summed reward picks
    longer, more hallucinated captions as chosen, and training on them made hallucination
    worse, while the mean (what the released code does) cut it. README, "Modes and
    defaults", has the measurements and the command that reproduces them.
    """

    aggregation: Aggregation = setting(
        "mean",
        "mean: the path's summed reward over its number of sentences (the released "
        "code); sum: the paper's cumulative reward, which rewards length.",
    )

    min_margin: float = setting(
        0.0,
        "A prompt yields a pair only if the chosen response's reward exceeds the rejected "
        "one's by at least this much (in the units of the aggregated reward: R_I's points "
        "for raw scores); 0 takes any difference, as the paper does. Once a model rarely "
        "hallucinates on its prompts, its near-ties are the reward model's noise more than a "
        "preference; the toy world measured how a margin keeps later iterations from "
        "training on it (README, 'The toy world's settings'). Depends on the reward's scale.",
    )

    min_sentence_gap: float | None = setting(
        None,
        "A prompt yields a pair only if the rejected response's worst sentence R is at least "
        "this far below the chosen response's worst (None: no such rule, the paper's). A "
        "hallucination is a sentence the reward scores low; once a model rarely hallucinates "
        "on its prompts, the worst-scored responses are instead true ones that stop earlier "
        "or name other present objects, with the same worst sentence as the chosen, and "
        "training against them pushes true sentences down. In the units of R (R_I's points), "
        "whatever the normalization.",
    )

    gap_sentences: GapSentences = setting(
        "worst",
        "Which rejected sentences min_sentence_gap applies to. worst: the rejected response's "
        "worst sentence. unshared: also every sentence of the rejected response that the "
        "chosen one lacks, so that the two differ only by sentences the reward finds clearly "
        "worse; DPO then never pushes down a sentence as good as the chosen response's (a "
        "present object the chosen response left out). Needs min_sentence_gap.",
    )

    def __post_init__(self) -> None:
        _require_choice("aggregation", self.aggregation, AGGREGATIONS)
        _require_finite("min_margin", self.min_margin, 0.0, 1e6)
        _require_choice("gap_sentences", self.gap_sentences, GAP_SENTENCES)
        if self.min_sentence_gap is not None:
            _require_finite("min_sentence_gap", self.min_sentence_gap, 0.0, 1e6)
        _require(
            self.gap_sentences == "worst" or self.min_sentence_gap is not None,
            f"gap_sentences={self.gap_sentences!r} has no effect without min_sentence_gap: "
            "set min_sentence_gap too",
        )


LANGUAGE_MODEL_LINEAR_LAYERS = (
    r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
)


@dataclass(frozen=True)
class DPOSettings:
    """DPO with LoRA on the language model (Eq. 5), the reference being the previous
    iteration's model. The defaults are the released 7B training script's."""

    beta: float = setting(
        0.1, "DPO temperature (TRL's default; the released code passes none, so TRL's applies)."
    )
    lora_r: int = setting(128, "LoRA rank (the released script: 128).")
    lora_alpha: int = setting(256, "LoRA alpha (the released script: 256).")
    lora_dropout: float = setting(0.05, "LoRA dropout (the released script: 0.05).")
    target_modules: str = setting(
        LANGUAGE_MODEL_LINEAR_LAYERS,
        "Regex over module names (PEFT full match) that gets "
        "LoRA: the language model's linear layers; the vision tower and projector stay "
        "frozen.",
    )
    learning_rate: float = setting(
        1e-7,
        "DPO learning rate: the released script's 1e-7 for LLaVA-1.5-7B. Tiny models "
        "need far more (the README's toy-world settings give its value).",
    )
    lr_scheduler: str = setting("cosine", "transformers learning-rate schedule name.")
    warmup_ratio: float = setting(0.03, "Share of each update's steps spent warming up.")
    epochs: int = setting(1, "Epochs over each update's pairs.")
    batch_size: int = setting(1, "Pairs per device batch.")
    gradient_accumulation_steps: int = setting(1, "Batches per optimizer step.")
    seed: int = setting(0, "Seed of the updates (version v trains with seed + v).")

    def __post_init__(self) -> None:
        _require_finite("beta", self.beta, 1e-9, 1e6)
        _require_int_at_least("lora_r", self.lora_r, 1)
        _require_int_at_least("lora_alpha", self.lora_alpha, 1)
        _require_finite("lora_dropout", self.lora_dropout, 0.0, 0.999)
        _require(
            isinstance(self.target_modules, str) and self.target_modules != "",
            "target_modules must be a non-empty module-name regex",
        )
        _require_finite("learning_rate", self.learning_rate, 1e-12, 1.0)
        _require_finite("warmup_ratio", self.warmup_ratio, 0.0, 1.0)
        _require_int_at_least("epochs", self.epochs, 1)
        _require_int_at_least("batch_size", self.batch_size, 1)
        _require_int_at_least("gradient_accumulation_steps", self.gradient_accumulation_steps, 1)
        _require_int_at_least("seed", self.seed, 0)


SCHEDULES = ("iteration", "online")
Schedule = Literal["iteration", "online"]


@dataclass(frozen=True)
class ScheduleConfig:
    """When the trainer updates the model, and which pairs it still accepts."""

    schedule: Schedule = setting(
        "iteration",
        "iteration: the paper's loop; the generators build the pairs of the "
        "whole prompt set with adapter t-1, the trainer trains once on all of them and "
        "publishes adapter t, and iteration t+1 starts on the same prompts. online: train on "
        "every online_every pairs as they arrive, publishing a version each time.",
    )
    online_every: int = setting(64, "Pairs per update in the online schedule.")
    max_staleness: int = setting(
        1,
        "A pair made by adapter version v is used only while the trainer's version is at "
        "most v + max_staleness; older pairs are dropped and counted (online schedule).",
    )

    def __post_init__(self) -> None:
        _require_choice("schedule", self.schedule, SCHEDULES)
        _require_int_at_least("online_every", self.online_every, 1)
        _require_int_at_least("max_staleness", self.max_staleness, 0)


@dataclass(frozen=True)
class CSRConfig:
    """Everything the method needs: T iterations of search, reward, selection and DPO."""

    iterations: int = setting(3, "CSR iterations T (the paper: 3).")
    search: SearchConfig = section(SearchConfig, "Sentence-level search and its expansion.")
    reward: RewardConfig = section(RewardConfig, "The calibrated sentence reward (Eq. 4).")
    selection: SelectionConfig = section(SelectionConfig, "How a path's rewards add up.")
    dpo: DPOSettings = section(DPOSettings, "DPO with LoRA.")
    schedule: ScheduleConfig = section(ScheduleConfig, "When the trainer updates.")

    def __post_init__(self) -> None:
        _require_int_at_least("iterations", self.iterations, 1)
        for name, kind in (
            ("search", SearchConfig),
            ("reward", RewardConfig),
            ("selection", SelectionConfig),
            ("dpo", DPOSettings),
            ("schedule", ScheduleConfig),
        ):
            _require(
                isinstance(getattr(self, name), kind),
                f"{name} must be a {kind.__name__}, got {type(getattr(self, name)).__name__}",
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CSRConfig:
        """A config from plain data (a YAML or JSON file's): `preset` ("paper" or
        "authors-code") picks the base, then `iterations` and the sections `search`,
        `reward`, `selection`, `dpo`, `schedule` override single fields. Unknown keys are
        refused by name."""
        if not isinstance(data, dict):
            raise ConfigError(f"an algorithm config is a mapping, not {type(data).__name__}")
        sections: dict[str, Any] = {
            "search": SearchConfig,
            "reward": RewardConfig,
            "selection": SelectionConfig,
            "dpo": DPOSettings,
            "schedule": ScheduleConfig,
        }
        unknown = set(data) - {"preset", "iterations", *sections}
        _require(
            not unknown,
            f"unknown algorithm config keys {sorted(unknown)}; use preset, "
            f"iterations, {', '.join(sections)}",
        )
        preset = data.get("preset", "paper")
        _require(
            preset in ("paper", "authors-code"),
            f"preset={preset!r} must be 'paper' or 'authors-code'",
        )
        config = cls.authors_code() if preset == "authors-code" else cls()
        changes = {}
        for name, kind in sections.items():
            fields = data.get(name) or {}
            _require(isinstance(fields, dict), f"{name} must be a mapping of its fields")
            known = set(kind.__dataclass_fields__)
            strange = set(fields) - known
            _require(
                not strange,
                f"{name} has no fields {sorted(strange)}; it has {', '.join(sorted(known))}",
            )
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
