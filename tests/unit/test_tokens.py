"""Banned columns and sentence-end tokens (services/generator/tokens.py) on the real kinds of
tokenizer: a SentencePiece Llama vocabulary (llava-hf) and Qwen2-VL's byte-level BPE, both at
their real sizes, with the expected token sets listed by hand."""

from __future__ import annotations

import pytest

from services.generator.engine import stop_token_ids
from services.generator.tokens import (
    NoSentenceEnd,
    SentenceEnds,
    banned_token_ids,
    logit_columns,
    sentence_end_ids,
)
from tests.models.real_tokenizers import llama_tokenizer, qwen2_tokenizer

# Every learned piece with a period in it, split by hand into those that end a sentence and
# those that do not (Qwen's byte-level pieces spell "\n" as Ċ). <0x2E> is Llama's byte "."
LLAMA_ENDS = {".", '."', ".'", ".)", ".]", "<0x2E>"}
LLAMA_OTHERS = {"..", "..."}
QWEN_ENDS = {".", ".Ċ", ".ĊĊ", '."', '."Ċ', '."ĊĊ', ".'", ".'Ċ", ".'ĊĊ", ".)", ".)Ċ", ".)ĊĊ"}
QWEN_ENDS |= {".]", ".]Ċ", ".]ĊĊ"}
QWEN_OTHERS = {"..", "...", "...Ċ", "...ĊĊ", ".S", ".e", ".g"}


@pytest.fixture(scope="module")
def llama():
    return llama_tokenizer()


@pytest.fixture(scope="module")
def qwen():
    return qwen2_tokenizer()


@pytest.fixture(scope="module")
def rules(llama, qwen):
    return {
        name: (tokenizer, SentenceEnds(tokenizer, ".", {tokenizer.eos_token_id}))
        for name, tokenizer in (("llama", llama), ("qwen", qwen))
    }


def _dotted_pieces(tokenizer) -> set[str]:
    return {
        piece
        for piece in tokenizer.get_vocab()
        if ("." in piece and "zzfill" not in piece) or piece == "<0x2E>"
    }


@pytest.mark.parametrize(
    ("name", "ends", "others"),
    [("llama", LLAMA_ENDS, LLAMA_OTHERS), ("qwen", QWEN_ENDS, QWEN_OTHERS)],
)
def test_the_tokens_that_end_a_sentence(request, name, ends, others):
    tokenizer = request.getfixturevalue(name)
    assert _dotted_pieces(tokenizer) == ends | others  # every period piece is judged above
    got = stop_token_ids(tokenizer, ".")
    assert set(tokenizer.convert_ids_to_tokens(sorted(got))) == ends


def test_llama_bans_bos_unk_pad_image_and_the_62_padding_columns(llama):
    assert len(llama) == 32002
    # <unk> 0, <s> 1, <image> 32000, <pad> 32001; EOS </s> (2) stays; columns 32002-32063
    expected = [0, 1, 32000, 32001, *range(32002, 32064)]
    assert banned_token_ids(llama, 32064, {llama.eos_token_id}).tolist() == expected


def test_qwen_bans_its_specials_but_im_end_and_the_407_padding_columns(qwen):
    assert len(qwen) == 151657
    # <|endoftext|> 151643, <|im_start|> 151644, 151646-151656 (object refs, boxes, quads,
    # vision markers and pads); EOS <|im_end|> (151645) stays; columns 151657-152063
    expected = [151643, 151644, *range(151646, 151657), *range(151657, 152064)]
    assert banned_token_ids(qwen, 152064, {qwen.eos_token_id}).tolist() == expected


@pytest.mark.parametrize("name", ["llama", "qwen"])
@pytest.mark.parametrize(
    ("text", "ends"),
    [
        ("A dog sits on the grass.", True),
        ('The sign reads "stop."', True),
        ("A dog (a brown one.)", True),
        ("There is Mr.", False),
        ("A tree, e.g.", False),
        ("A photo by J.", False),
        ("So do I.", True),
        ("A dog...", False),
        ("A dog", False),
    ],
)
def test_a_candidate_ends_on_its_decoded_text(rules, name, text, ends):
    tokenizer, rule = rules[name]
    tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert rule.ends(tokens) is ends
    dog = tokenizer(" A dog", add_special_tokens=False)["input_ids"]
    assert rule.ends([*dog, tokenizer.eos_token_id])  # EOS ends whatever came before


def test_a_marker_no_token_has_is_refused(llama):
    with pytest.raises(NoSentenceEnd, match="'¶'"):
        sentence_end_ids(llama, "¶")


def test_logit_columns_reads_the_output_head():
    import torch

    class Model(torch.nn.Module):
        def get_output_embeddings(self):
            return torch.nn.Linear(8, 70, bias=False)

    assert logit_columns(Model()) == 70
