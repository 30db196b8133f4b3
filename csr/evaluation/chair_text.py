"""How CHAIR reads a caption: the two named sets of text rules, and the original's pieces.

Owns the choice between
- `TextRules.ORIGINAL`: the text handling of the original CHAIR code (Rohrbach et al. 2018,
  `utils/chair.py`), whose numbers published CHAIR tables report. A caption is lowercased,
  split into sentences and words as `nltk.word_tokenize` does (Punkt, then the Penn Treebank
  rules), and every word is singularised by Pattern's `singularize`;
- `TextRules.CLEANED`: words are runs of letters (so "dog-walker" is "dog" and "walker") and
  plurals are folded by a small rule set that gets "bus", "ties" and "doggies" right.

The original's pieces, reproduced here:
- Sentences: nltk's Punkt algorithm with no trained parameters. Punkt ends a sentence at a
  word with a final period unless the word is a learned abbreviation, an initial or a number;
  the English model's abbreviations ("st", "dr", "co", "ft", ...) name no COCO object, and
  the captions are lowercased before Punkt sees them, so on every word that can name an
  object this splits where the English model (which cannot be downloaded here) does.
- Words: nltk's `TreebankWordTokenizer` with the three rules nltk 3.2.5's `word_tokenize`
  (the release the original pins) added to it: curly quotes are split off, and a sentence's
  final period is split off before closing curly quotes too. Hyphens and slashes are kept, so
  "dog-walker" and "tv/monitor" are single words that name nothing.
- Singulars: Pattern 3.6's `singularize`. Pattern itself is no longer installable; TextBlob
  ships its tables (suffix rules, irregular plurals, exceptions). This module runs Pattern's
  procedure on them, with Pattern's own exception lists where TextBlob's differ, and with
  Pattern's behaviour where TextBlob's procedure differs (Pattern leaves "doggies" alone,
  TextBlob returns "doggie"). So "bus" is "bu", "ties" is "ty", "glass" is "glas".

nltk and TextBlob are pure text libraries; they are imported on first use, not with this
module, and nothing here reads a file or the network.
"""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass
from typing import Any


class TextRules(str, enum.Enum):
    """Which text handling CHAIR uses: the original's (comparable with published tables) or
    the cleaned one (counts what the original misses: "bus", "motor bike", "dog-walker"...)."""

    ORIGINAL = "original"
    CLEANED = "cleaned"


def text_rules(name: str | TextRules) -> TextRules:
    """The named rule set; a clear error for any other name."""
    try:
        return TextRules(name)
    except ValueError as e:
        names = ", ".join(r.value for r in TextRules)
        raise ValueError(f"unknown CHAIR text rules {name!r}: use one of {names}") from e


# nltk 3.2.5's word_tokenize added these to the Treebank rules (the Treebank rules alone
# would otherwise keep "dog’s", with a curly apostrophe, as one word)
_OPEN_QUOTES = (re.compile("([«“‘])"), r" \1 ")
_CLOSE_QUOTES = (re.compile("([»”’])"), r" \1 ")
_FINAL_PERIOD = (re.compile(r"([^\.])(\.)([\]\)}>\"'»”’ ]*)\s*$"), r"\1 \2 \3 ")


@functools.cache
def _tokenizers() -> tuple[Any, Any]:
    from nltk.tokenize.punkt import PunktSentenceTokenizer
    from nltk.tokenize.treebank import TreebankWordTokenizer

    words = TreebankWordTokenizer()
    # instance attributes, so nltk's class (and anyone else's tokenizer) is left unchanged
    words.STARTING_QUOTES = [_OPEN_QUOTES, *words.STARTING_QUOTES]
    words.PUNCTUATION = [_FINAL_PERIOD, *words.PUNCTUATION]
    words.ENDING_QUOTES = [_CLOSE_QUOTES, *words.ENDING_QUOTES]
    return PunktSentenceTokenizer(), words


def original_words(text: str) -> list[str]:
    """The caption's words as the original CHAIR code has them: lowercased, split into
    sentences and then words as nltk's `word_tokenize` does, punctuation kept as words."""
    sentences, words = _tokenizers()
    lowered = text.lower()
    return [w for sentence in sentences.tokenize(lowered) for w in words.tokenize(sentence)]


@dataclass(frozen=True)
class _PatternTables:
    rules: tuple[tuple[re.Pattern[str], str], ...]
    irregular: dict[str, str]
    unchanged: frozenset[str]  # Pattern's uninflected and uncountable words
    ie_words: frozenset[str]
    prepositions: frozenset[str]


# Where TextBlob's copies of Pattern's exception lists differ from Pattern 3.6's own
_NOT_IN_PATTERN_UNCHANGED = {
    "aircraft",
    "antelope",
    "cattle",
    "jeans",
    "moose",
    "offspring",
    "cannabis",
}
_ONLY_IN_PATTERN_UNCHANGED = {"christmas"}
_NOT_IN_PATTERN_IE = {"algerie", "bookie"}
_ONLY_IN_PATTERN_IE = {"alergie", "newbie"}  # "alergie" is Pattern's spelling
_NOT_IN_PATTERN_IRREGULAR = {"lynxes"}
# Pattern 3.6's table sizes (unchanged words, "-ie" words, irregular plurals, suffix rules):
# a TextBlob whose copies changed again is refused rather than silently followed
_PATTERN_SIZES = (73, 44, 41, 40)


@functools.cache
def _pattern_tables() -> _PatternTables:
    from textblob.en import inflect

    unchanged = {*inflect.singular_uninflected, *inflect.singular_uncountable}
    tables = _PatternTables(
        rules=tuple((rule, replacement) for rule, replacement in inflect.singular_rules),
        irregular={
            plural: one
            for plural, one in inflect.singular_irregular.items()
            if plural not in _NOT_IN_PATTERN_IRREGULAR
        },
        unchanged=frozenset((unchanged - _NOT_IN_PATTERN_UNCHANGED) | _ONLY_IN_PATTERN_UNCHANGED),
        ie_words=frozenset((set(inflect.singular_ie) - _NOT_IN_PATTERN_IE) | _ONLY_IN_PATTERN_IE),
        prepositions=frozenset(inflect.plural_prepositions),
    )
    sizes = (len(tables.unchanged), len(tables.ie_words), len(tables.irregular), len(tables.rules))
    if sizes != _PATTERN_SIZES:
        from importlib.metadata import version

        raise RuntimeError(
            f"textblob {version('textblob')}'s copy of Pattern's singular tables has "
            f"sizes {sizes}, not Pattern 3.6's {_PATTERN_SIZES}; install "
            "textblob 0.20.1, whose tables this module corrects"
        )
    return tables


@functools.lru_cache(maxsize=1 << 16)  # captions repeat their words; the rules are slow
def pattern_singular(word: str) -> str:
    """Pattern 3.6's `singularize(word)`, quirks included: 'bus' -> 'bu', 'ties' -> 'ty',
    'glass' -> 'glas', 'tennis' -> 'tenni', 'doggies' and 'collies' unchanged."""
    tables = _pattern_tables()
    if "-" in word:  # "mothers-in-law": the head noun before a preposition
        head, _, rest = word.partition("-")
        if rest.split("-")[0] in tables.prepositions:
            return f"{pattern_singular(head)}-{rest}"
    if word.endswith("'"):
        return pattern_singular(word[:-1]) + "'s"
    lower = word.lower()
    # any word that ends one of the exceptions ("s", "ries", "scissors") is kept as it is
    if any(exception.endswith(lower) for exception in tables.unchanged):
        return word
    if any(lower.endswith(ie_word + "s") for ie_word in tables.ie_words):
        return lower  # Pattern returns these plurals unchanged ("doggies")
    for plural, one in tables.irregular.items():
        if lower.endswith(plural):
            return re.sub(f"(?i){plural}$", one, word)
    for rule, template in tables.rules:
        match = rule.search(word)
        if match:
            replacement = template
            for n, group in enumerate(match.groups(), start=1):
                if group is None:  # an optional group that did not take part drops out
                    replacement = replacement.replace(f"\\{n}", "")
            return rule.sub(replacement, word)
    return word
