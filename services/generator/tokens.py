"""Which tokens the generator may emit, and which end a sentence, for any tokenizer.

Owns two decisions the engine applies to the model's next-token distribution:

- **Banned columns.** Every special token but EOS (BOS, pad, unknown, image and video
  placeholders, chat markers such as `<|im_start|>`), and every logit column at or past
  `len(tokenizer)`. Models pad their embedding past the tokenizer (LLaVA-1.5: 32064
  columns for 32002 tokens; Qwen2-VL-7B: 152064 for 151657), and those columns are no
  token: they are set to -inf, so they are never chosen, sampled or decoded.
- **Sentence ends** (the rule is `csr.sentence_end`'s). `sentence_end_ids` lists the tokens
  whose own text ends with the marker, past closing quotes and brackets and outside an
  ellipsis: `.` `."` `.)` `.\\n` do, `...` `..` `…` do not. Whether the period of such a
  token ends the sentence can depend on the tokens before it (`▁Mr` then `.`), so
  `SentenceEnds.ends` decides per candidate, on the decoded text of its tokens.

Tokens are decoded one by one, as the search emits them, with special tokens skipped.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch

from csr.sentence_end import ends_sentence, ends_with_marker


class NoSentenceEnd(ValueError):
    """No token of the tokenizer can end a sentence with the configured marker."""


def logit_columns(model) -> int:
    """How many next-token logits the model produces (its output embedding's rows)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and getattr(head, "weight", None) is not None:
        return int(head.weight.shape[0])
    return int(model.config.get_text_config().vocab_size)


def special_ids(tokenizer) -> set[int]:
    """Ids of the named special tokens and of every added token marked special."""
    ids = {int(i) for i in tokenizer.all_special_ids}
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    ids |= {int(i) for i, token in added.items() if getattr(token, "special", False)}
    return ids


def banned_token_ids(tokenizer, columns: int, allowed: Collection[int]) -> torch.Tensor:
    """Sorted ids (long tensor) of the logit columns the search must never pick: the special
    tokens not in `allowed` (the EOS ids) and the columns from len(tokenizer) to `columns`."""
    banned = {i for i in special_ids(tokenizer) if i < columns} - set(allowed)
    banned |= set(range(len(tokenizer), columns))
    return torch.tensor(sorted(banned), dtype=torch.long)


def token_texts(tokenizer) -> list[str]:
    """Each token's text decoded alone (special tokens as ''), indexed by id."""
    ids = [[i] for i in range(len(tokenizer))]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # a fast tokenizer: one call into its Rust decoder
        return list(backend.decode_batch(ids, skip_special_tokens=True))
    return tokenizer.batch_decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def sentence_end_ids(tokenizer, marker: str) -> set[int]:
    """Ids of the tokens whose own text can end a sentence (see the module docstring)."""
    specials = special_ids(tokenizer)
    ids = {
        i
        for i, text in enumerate(token_texts(tokenizer))
        if i not in specials and text.strip() and ends_with_marker(text, marker)
    }
    if not ids:
        raise NoSentenceEnd(
            f"no token of the tokenizer can end a sentence with the marker {marker!r}; "
            "set search.sentence_end to a marker the model writes, such as '.'"
        )
    return ids


class SentenceEnds:
    """The stop decision of the search: `token_ids` may stop a candidate (the EOS ids and the
    sentence-end tokens), and `ends(tokens)` says whether the candidate's tokens so far
    really end there (EOS always does; a sentence-end token when the decoded text ends a
    sentence, e.g. not after "Mr")."""

    def __init__(self, tokenizer, marker: str, eos_ids: Collection[int]):
        self.tokenizer, self.marker = tokenizer, marker
        self.eos_ids = frozenset(int(i) for i in eos_ids)
        self.sentence_ids = frozenset(sentence_end_ids(tokenizer, marker))
        self.token_ids = self.sentence_ids | self.eos_ids

    def ends(self, tokens: Sequence[int]) -> bool:
        """tokens: the candidate's tokens (at least those of the current sentence), the
        last one just chosen."""
        if not tokens:
            return False
        last = int(tokens[-1])
        if last in self.eos_ids:
            return True
        if last not in self.sentence_ids:
            return False
        text = self.tokenizer.decode(
            list(tokens), skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        return ends_sentence(text, self.marker)
