"""The toy world's tokenizers: one byte-level BPE, trained on the fly, in two wrappings.

The CLIP text tower reads "<s> sentence </s>" and pools at </s>; the VLM reads its chat
template with no special tokens added (as TRL's DPO collator tokenizes) and ends answers with
</s>. Specials: <pad> 0, <unk> 1, <s> 2, </s> 3, <image> 4 (</s> is not 2, so transformers'
CLIP pools at the first </s> rather than at the largest id).
"""

from __future__ import annotations

from toyworld.world import SHAPES, caption

SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "<image>"]
PROMPTS = ("Describe the image.", "What is in the image?")
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}USER: {% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %} "
    "{% endif %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def corpus() -> list[str]:
    """Every text the world can produce: captions of each object set, prompts, questions."""
    texts = [caption({shape}) for shape in SHAPES] + [caption(set(SHAPES))]
    texts += [f"Is there a {shape} in the image? Yes. No." for shape in SHAPES]
    return texts + list(PROMPTS) + ["USER: ASSISTANT:"]


def train_bpe(vocab_size: int = 400):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus() * 4, trainer)
    return tok


def clip_tokenizer(max_length: int = 32):
    """For CLIP: '<s> text </s>', padded with <pad>."""
    import copy

    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tok = copy.deepcopy(train_bpe())
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 2), ("</s>", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=max_length,
    )


def vlm_tokenizer():
    """For the VLM: no specials added by tokenizing; <image> and the chat template known."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=train_bpe(),
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=["<image>"],
        model_max_length=256,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
