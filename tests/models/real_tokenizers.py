"""Tokenizers and processors of the real kinds, trained on the fly (nothing is downloaded).

- `llama_tokenizer`: a SentencePiece-style Llama vocabulary as llava-hf/llava-1.5-7b-hf ships
  it: BPE with byte fallback and `▁` word boundaries (Metaspace), ids 0-2 `<unk>` `<s>` `</s>`,
  3-258 the byte tokens `<0x00>`...`<0xFF>`, then the learned pieces; llava-hf's added
  `<image>` (32000) and `<pad>` (32001), and its chat template
  (`USER: <image>\\n... ASSISTANT:`). A newline, as in Llama, is the byte token `<0x0A>`.
- `qwen2_tokenizer`: Qwen2's byte-level BPE (its pre-tokenizer regex, NFC) with Qwen2-VL's 14
  special tokens from `<|endoftext|>` (151643) to `<|video_pad|>` (151656), EOS `<|im_end|>`,
  pad `<|endoftext|>`, no BOS, and Qwen2-VL-7B-Instruct's chat template.
- `llava_processor` / `qwen2_vl_processor`: the processors configured as the real ones
  (CLIP 336 crop, patch 14, 576 image tokens; Qwen2-VL's min_pixels / max_pixels, patch 14,
  merge 2).

The learned pieces come from a small caption-like corpus. Words and punctuation are learned
apart (as a large SentencePiece vocabulary mostly keeps them), so sentence-end pieces such
as `.` `."` `.)` `...` are tokens of their own. To reach the real sizes (32000 and 151643
base tokens, so that every added token has its real id) the vocabulary is filled up with
pieces that no merge produces: they exist, decode and can be sampled, but never come out of
encoding.
"""

from __future__ import annotations

import json
import random

LLAMA_BASE = 32000  # Llama-2's vocabulary; llava-hf adds <image> and <pad> after it
QWEN2_BASE = 151643  # Qwen2's byte-level BPE; Qwen2-VL's special tokens follow
QWEN2_VL_SPECIALS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# llava-hf/llava-1.5-7b-hf's chat_template.json
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}"
    "{{ message['role'].upper() + ': '}}{% endif %}{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}{# Render all text next #}"
    "{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
# Qwen/Qwen2-VL-7B-Instruct's chat_template.json
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_WORDS = (
    "there is a an the in on of with and dog cat man woman table chair car street tree sky "
    "red blue green white black small large standing sitting next to image shows describe "
    "this detail what photo picture sign reads says holding person people two three bus "
    "kitchen plate pizza bench grass water boat train road building window wall"
)
_SENTENCE_ENDS = (".", ".", ".", '."', ".)", "...", "…", "!", "?", ".'", ".]")


def caption_corpus(seed: int = 0, sentences: int = 3000, newlines: bool = False) -> list[str]:
    """Caption-like sentences with the punctuation a sentence-end rule must get right:
    quotes and brackets after the period, ellipses, abbreviations, initials, decimals;
    with newlines, some end in one or two (a byte-level BPE learns ".\n"; Llama's
    SentencePiece has no newline piece and falls back to the byte)."""
    rng = random.Random(seed)
    vocabulary = _WORDS.split()
    breaks = ("", "", "", "\n", "\n\n") if newlines else ("",)
    out = []
    for _ in range(sentences):
        words = " ".join(rng.choice(vocabulary) for _ in range(rng.randint(3, 9))).capitalize()
        roll = rng.random()
        if roll < 0.1:
            words = f"Mr. Smith and Dr. Lee see {words.lower()}"
        elif roll < 0.2:
            words = f"{words}, e.g. a {rng.choice(vocabulary)}, i.e. one in the U.S"
        elif roll < 0.25:
            words = f"{words} of 3.5 m by J. Smith"
        elif roll < 0.35:
            words = f'The sign reads "{words.lower()}'
        out.append(words + rng.choice(_SENTENCE_ENDS) + rng.choice(breaks))
    # the chat templates' own words, so the prompts tokenize as in a real vocabulary
    return out + ["USER: ASSISTANT: You are a helpful assistant. system user assistant"] * 50


def _train_bpe(pre_tokenizer, vocab_size: int, special_tokens, alphabet=(), newlines=False):
    from tokenizers import Tokenizer, models, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=list(alphabet),
        show_progress=False,
    )
    tokenizer.train_from_iterator(caption_corpus(newlines=newlines), trainer)
    model = json.loads(tokenizer.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return dict(model["vocab"]), merges


def _fill(vocab: dict[str, int], size: int, prefix: str) -> dict[str, int]:
    """Pad the vocabulary to `size` with pieces no merge produces."""
    for index in range(len(vocab), size):
        vocab[f"{prefix}zzfill{index}"] = index
    return vocab


def llama_tokenizer(base_size: int | None = LLAMA_BASE, learned: int = 2000):
    """LlamaTokenizerFast as llava-hf ships it (see the module docstring); base_size=None
    keeps only the learned vocabulary (for tiny models)."""
    from tokenizers import AddedToken, Regex, pre_tokenizers
    from transformers import LlamaTokenizerFast

    specials = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256))]
    # Learn within words and within runs of punctuation: "▁dog" and "." stay apart.
    training = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True),
            pre_tokenizers.Split(Regex(r"[^\w▁]+"), behavior="isolated"),
        ]
    )
    vocab, merges = _train_bpe(training, learned, specials)
    if base_size is not None:
        vocab = _fill(vocab, base_size, "▁")
    tokenizer = LlamaTokenizerFast(vocab=vocab, merges=merges, legacy=False)
    tokenizer.add_tokens([AddedToken("<image>", special=True, normalized=False)], True)
    tokenizer.add_tokens([AddedToken("<pad>", special=True, normalized=False)], True)
    tokenizer.pad_token = "<pad>"
    tokenizer.chat_template = LLAVA_CHAT_TEMPLATE
    return tokenizer


def qwen2_tokenizer(base_size: int | None = QWEN2_BASE, learned: int = 2000):
    """Qwen2TokenizerFast with Qwen2-VL's special tokens (see the module docstring)."""
    from tokenizers import AddedToken, Regex, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import Qwen2TokenizerFast
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    training = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    vocab, merges = _train_bpe(training, learned, (), ByteLevel.alphabet(), newlines=True)
    if base_size is not None:
        vocab = _fill(vocab, base_size, "")
    tokenizer = Qwen2TokenizerFast(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|endoftext|>",  # the one special token it adds itself: 151643
        pad_token="<|endoftext|>",
    )
    for token in QWEN2_VL_SPECIALS[1:]:  # in order: each gets its real id
        tokenizer.add_tokens([AddedToken(token, special=True, normalized=False)], True)
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.add_special_tokens(
        {"additional_special_tokens": [t for t in QWEN2_VL_SPECIALS if t != "<|endoftext|>"]}
    )
    tokenizer.chat_template = QWEN2_VL_CHAT_TEMPLATE
    return tokenizer


def llava_processor(tokenizer=None):
    """LlavaProcessor as llava-hf's: CLIP preprocessing at 336 (shortest edge, centre crop,
    bicubic), patch 14, the 'default' strategy (the CLS feature dropped): 576 image tokens."""
    from transformers import CLIPImageProcessor, LlavaProcessor

    tokenizer = tokenizer or llama_tokenizer()
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 336},
        crop_size={"height": 336, "width": 336},
        resample=3,
        image_mean=OPENAI_CLIP_MEAN,
        image_std=OPENAI_CLIP_STD,
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )


def qwen2_vl_processor(tokenizer=None, min_pixels: int = 3136, max_pixels: int = 12845056):
    """Qwen2VLProcessor as Qwen2-VL-7B-Instruct's (patch 14, merge 2, temporal patch 2): an
    image is resized to multiples of 28 within [min_pixels, max_pixels] and gives
    (height / 28) x (width / 28) image tokens."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    tokenizer = tokenizer or qwen2_tokenizer()
    image_processor = Qwen2VLImageProcessor(
        min_pixels=min_pixels,
        max_pixels=max_pixels,
        patch_size=14,
        temporal_patch_size=2,
        merge_size=2,
        image_mean=OPENAI_CLIP_MEAN,
        image_std=OPENAI_CLIP_STD,
    )
    return Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(patch_size=14, merge_size=2, temporal_patch_size=2),
        chat_template=QWEN2_VL_CHAT_TEMPLATE,
    )
