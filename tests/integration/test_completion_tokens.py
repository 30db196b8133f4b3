"""DPO trains on the tokens the generator generated: TRL tokenizes a completion apart from its
prompt, so the text of a pair must tokenize alone to the tokens the model wrote after the
chat prompt. Checked with the real TRL collator on tokenizers of the real kinds, trained here
on the fly: a SentencePiece Llama-style one (LLaVA's chat template, as transformers builds it
and with the legacy normalizer of older tokenizer.json files) and a byte-level BPE with
Qwen2-VL's template."""

from __future__ import annotations

import itertools

import pytest
from PIL import Image

from csr.config import CSRConfig
from csr.pairs import generate_pairs
from csr.search import SearchRequest
from csr.training import dpo_example
from services.runtime.vlm import chat_prompt, response_lead
from tests.models.llava import CHAT_TEMPLATE as LLAVA_TEMPLATE
from tests.models.qwen import VISION_TOKENS
from tests.unit.fakes import ScriptedModel, ScriptedRelevance, cand

QWEN_TEMPLATE = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
CORPUS = [
    "USER: ASSISTANT: system user assistant You are a helpful assistant. Describe the image.",
    "There is a red circle. There is a blue square. The cat sat on the mat.",
] * 30
# What the model wrote after the prompt: each tokenizer's own spelling of the same answer
# (two sentences, then the end token), the first word without a space after Qwen2-VL's
# "assistant\n" and after a space after LLaVA's "ASSISTANT:".
SENTENCEPIECE_ANSWER = (["▁There", "▁is", "▁a", "▁red", "▁circle", "."], ["▁The", "▁cat", "."])
SENTENCEPIECE_OTHER = (["▁There", "▁is", "▁a", "▁blue", "▁square", "."],)
BYTE_LEVEL_ANSWER = (["There", "Ġis", "Ġa", "Ġred", "Ġcircle", "."], ["ĠThe", "Ġcat", "."])
BYTE_LEVEL_OTHER = (["There", "Ġis", "Ġa", "Ġblue", "Ġsquare", "."],)


def _train_bpe(pre_tokenizer, specials: list[str], alphabet: list[str]):
    """(vocab, merges) of a BPE trained on CORPUS."""
    import json

    from tokenizers import Tokenizer, models, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=alphabet, show_progress=False
    )
    tok.train_from_iterator(CORPUS, trainer)
    model = json.loads(tok.to_str())["model"]
    return model["vocab"], [tuple(m) for m in model["merges"]]


def sentencepiece_processor(legacy_normalizer: bool):
    """LLaVA-1.5's processor on a SentencePiece-style Llama tokenizer (Metaspace, '▁')."""
    from tokenizers import normalizers, pre_tokenizers
    from transformers import CLIPImageProcessor, LlamaTokenizer, LlavaProcessor

    vocab, merges = _train_bpe(  # trained with punctuation apart, as SentencePiece keeps it
        pre_tokenizers.Sequence(
            [
                pre_tokenizers.Punctuation(),
                pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
            ]
        ),
        ["<unk>", "<s>", "</s>"],
        [],
    )
    tokenizer = LlamaTokenizer(vocab=vocab, merges=merges)
    if legacy_normalizer:  # as llava-hf's tokenizer.json spells it for transformers 4
        backend = tokenizer.backend_tokenizer
        backend.normalizer = normalizers.Sequence(
            [normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")]
        )
        backend.pre_tokenizer = None
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"], "pad_token": "<unk>"})
    tokenizer.chat_template = LLAVA_TEMPLATE
    return LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}
        ),
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="full",
        chat_template=LLAVA_TEMPLATE,
        num_additional_image_tokens=1,
    )


def byte_level_processor():
    """Qwen2-VL's processor on a byte-level BPE tokenizer with its split rule and template."""
    from tokenizers import Regex, pre_tokenizers
    from transformers import (
        Qwen2Tokenizer,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    vocab, merges = _train_bpe(
        pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        ),
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *VISION_TOKENS],
        pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, eos_token="<|im_end|>")
    tokenizer.add_special_tokens({"additional_special_tokens": VISION_TOKENS})
    tokenizer.chat_template = QWEN_TEMPLATE
    image = Qwen2VLImageProcessor(patch_size=4, merge_size=2, min_pixels=256, max_pixels=256)
    video = Qwen2VLVideoProcessor(patch_size=4, merge_size=2)
    return Qwen2VLProcessor(
        image_processor=image,
        tokenizer=tokenizer,
        video_processor=video,
        chat_template=QWEN_TEMPLATE,
    )


def generated_ids(tokenizer, sentences) -> list[list[int]]:
    ids = [tokenizer.convert_tokens_to_ids(s) for s in sentences]
    for tokens, numbers in zip(sentences, ids):
        assert tokenizer.unk_token_id not in numbers, tokens  # all in the trained vocabulary
    return ids


def sentence_texts(tokenizer, sentences: list[list[int]]) -> list[str]:
    """Each sentence's text as the generator decodes it: the decoded response so far, less
    the decoded text before it (so the spacing between sentences stays)."""
    texts, before = [], []
    for sentence in sentences:
        head = tokenizer.decode(before, skip_special_tokens=True)
        texts.append(tokenizer.decode(before + sentence, skip_special_tokens=True)[len(head) :])
        before = before + sentence
    return texts


def pair_record(tokenizer, chosen, rejected):
    """The record the core makes from the two responses' sentences (chosen scores higher)."""
    good, bad = sentence_texts(tokenizer, chosen), sentence_texts(tokenizer, rejected)
    tree = {"": [cand(good[0], -0.1), cand(bad[0], -0.2, ends=True)]}
    tree[good[0].strip()] = [cand(good[1], -0.1, ends=True)]
    relevance = {good[0].strip(): 9.0, good[1].strip(): 9.0, bad[0].strip(): 1.0}
    [outcome] = generate_pairs(
        [SearchRequest("p", "Describe the image.", "a.png")],
        ScriptedModel(tree),
        ScriptedRelevance(relevance),
        CSRConfig(),
        1,
        "base",
    )
    return outcome.record


def hand_spelled(processor, chosen, rejected):
    tokenizer = processor.tokenizer
    return processor, generated_ids(tokenizer, chosen), generated_ids(tokenizer, rejected)


def toy_world():
    """The toy world's processor, and as generated tokens the answers its VLM was taught to
    write after the prompt (toyworld.vlm.answer_batch), cut into sentences."""
    from types import SimpleNamespace

    from toyworld.tokenizer import PROMPTS, vlm_tokenizer
    from toyworld.vlm import answer_batch, processor_for
    from toyworld.world import WorldConfig, caption

    world = WorldConfig()
    vision = SimpleNamespace(config=SimpleNamespace(vision_config=SimpleNamespace(patch_size=8)))
    processor = processor_for(vlm_tokenizer(), vision, world)
    image = Image.new("RGB", (world.image_size, world.image_size), (10, 200, 30))
    period = processor.tokenizer.convert_tokens_to_ids(".")

    def taught(shapes) -> list[list[int]]:
        batch = answer_batch(processor, [(image, PROMPTS[0], caption(shapes))], {})
        ids = batch["input_ids"][0][batch["labels"][0] != -100].tolist()[:-1]  # less </s>
        assert ids.count(period) == len(shapes)
        cuts = [0] + [i + 1 for i, t in enumerate(ids) if t == period]
        return [ids[a:b] for a, b in itertools.pairwise(cuts)]

    return processor, taught({"circle", "ring"}), taught({"square"})


CASES = {
    "sentencepiece": lambda: hand_spelled(
        sentencepiece_processor(False), SENTENCEPIECE_ANSWER, SENTENCEPIECE_OTHER
    ),
    "sentencepiece-legacy": lambda: hand_spelled(
        sentencepiece_processor(True), SENTENCEPIECE_ANSWER, SENTENCEPIECE_OTHER
    ),
    "byte-level-bpe": lambda: hand_spelled(
        byte_level_processor(), BYTE_LEVEL_ANSWER, BYTE_LEVEL_OTHER
    ),
    "toy-world": toy_world,
}


@pytest.mark.parametrize("kind", CASES)
def test_trl_tokenizes_a_pair_as_the_prompt_then_the_generated_tokens(kind):
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    processor, chosen, rejected = CASES[kind]()
    tokenizer = processor.tokenizer
    record = pair_record(tokenizer, chosen, rejected)
    example = dpo_example(record, tokenizer.eos_token, response_lead(processor))
    image = Image.new("RGB", (16, 16), (120, 40, 200))
    prompt = chat_prompt(processor, example.prompt)
    batch = DataCollatorForVisionPreference(processor)(
        [
            {
                "images": [image],
                "prompt": prompt,
                "chosen": example.chosen,
                "rejected": example.rejected,
            }
        ]
    )
    # The generator's prompt tokens: the same processor call its engine makes.
    prompt_ids = processor(images=[image], text=[prompt], add_special_tokens=False)["input_ids"]
    eos = [tokenizer.eos_token_id]
    for row, sentences in enumerate((chosen, rejected)):
        kept = batch["attention_mask"][row].bool()
        expected = list(prompt_ids[0]) + [t for s in sentences for t in s] + eos
        assert batch["input_ids"][row][kept].tolist() == expected
