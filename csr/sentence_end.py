"""Where a sentence ends: the rule of the generator's stop decision and the search's finish check.

A text ends a sentence when, after dropping trailing whitespace and closing quotes and
brackets (`"'”’»)]}`), it ends with the marker (SearchConfig.sentence_end), and, for the
period:
- the period is not part of an ellipsis: the character before it is neither `.` nor `…`
  ("Wait..." and "Wait…." go on);
- the word before the period is not an abbreviation: a title (`Mr` `Mrs` `Ms` `Dr` `Prof`
  `St` `Mt` `Jr` `Sr`), `vs`, `cf`, a dotted one (`e.g`, `i.e`, `U.S`, `a.m`), or a single
  capital letter other than `I` (an initial: "J. Smith").

So `dog.` `dog."` `dog.)` `dog.\\n` end a sentence and `dog...` `Mr.` `e.g.` `J.` do not.
Numbers end sentences ("in 2019." and list items "1."), so a decimal point ("3.5") would, if
a model generated the "3." alone first; "etc." ends one as well, where it usually stands.
Other markers (`?`, `!`, `。`) need only the first rule.

The rule has two parts. `ends_with_marker` (the marker past closers, outside an ellipsis)
needs only the text's end: the generator finds with it the tokens that can end a sentence
(services/generator/tokens.py), and the search (csr.search) tells with it a candidate that
stopped on a sentence end from one cut by the token cap. `ends_sentence` adds the
abbreviations, which need the words before the period: the generator applies it per
candidate, on the text of the sentence so far, when one of those tokens comes up.
"""

from __future__ import annotations

import re

CLOSERS = "\"'”’»)]}"
ELLIPSIS = "…"
ABBREVIATIONS = frozenset({"Mr", "Mrs", "Ms", "Dr", "Prof", "St", "Mt", "Jr", "Sr", "vs", "cf"})
_DOTTED = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]")
_OPENERS = "\"'“‘«([{"


def strip_closers(text: str) -> str:
    """The text without trailing whitespace and closing quotes or brackets."""
    return text.rstrip().rstrip(CLOSERS + " \t\r\n\f\v")


def ends_with_marker(text: str, marker: str) -> bool:
    """The token-level part of the rule: the marker at the end, past closers, and (for the
    period) not part of an ellipsis."""
    core = strip_closers(text)
    if not core.endswith(marker):
        return False
    if marker == ".":
        before = core[: -len(marker)]
        return not before.endswith((".", ELLIPSIS))
    return True


def is_abbreviation(word: str) -> bool:
    """True for the words a period after which does not end a sentence (see the module)."""
    word = word.lstrip(_OPENERS)
    if word in ABBREVIATIONS or _DOTTED.fullmatch(word):
        return True
    return len(word) == 1 and word.isupper() and word != "I"


def ends_sentence(text: str, marker: str) -> bool:
    """The whole rule: does `text` (a sentence so far) end a sentence at its end?"""
    if not ends_with_marker(text, marker):
        return False
    if marker != ".":
        return True
    before = strip_closers(text)[:-1]
    if not before or before[-1].isspace():  # "a circle ." or a lone "."
        return True
    return not is_abbreviation(before.split()[-1])
