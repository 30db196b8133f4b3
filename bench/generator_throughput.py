"""Generator engine against the authors'-way reference loop, same model, prompts and reward.

(a) reference: one search call per tree node with a full re-encode of image and prompt (as
the released code's `generate(num_beams=5)`, which runs the prompt as 5 rows), and one
relevance call per sentence; also a stricter variant that encodes the prompt once per node;
(b) the engine: the batch's prompts encoded in one forward, all prefixes of all prompts
expanded in one batched beam search, one ScoreBatch call per step for all prompts' sentences
(the reward worker encodes them in one forward). All run on a tiny random LLaVA and a real
reward worker (tiny open_clip) in this process, alternately for several rounds (medians),
and must produce the same pairs.

Also prints the engine's generated tokens/s against the model's raw batched one-token
forward, the limit of token-by-token decoding. The comparison is made at the same rows and
the same prompt length: the raw forward runs R rows (R = the engine's beam rows per token
step, on average) with one token each, over a plain per-row cache (transformers'
DynamicCache) of the prompt's length plus 8 positions, 20 forwards timed; the engine's rate
is its beam-row tokens over the time of its token-by-token search (the forwards plus the
beam bookkeeping, VLMEngine.decode_seconds). Its rate over the whole batch (prompt encoding,
the prefixes' tokens fed at each expansion and the reward calls included) is printed too.

And the KV bytes a beam row costs at LLaVA-1.5-7B shapes (fp16, prompts of 576 image + 64
text tokens), from the engine's own accounting (services.generator.memory): with the plain
per-row cache every row holds its prompt, prefix and new tokens; in the engine each prompt is
held once, each prefix's tokens once, and a row holds its new tokens.

    .venv/bin/python bench/generator_throughput.py [--prompts 16] [--rounds 3]

On a machine shared with other work, OMP_NUM_THREADS=1 keeps the figures steady.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' tiny models

import torch
from PIL import Image

from csr.config import CSRConfig, SearchConfig
from csr.search import SearchRequest
from services.generator.engine import VLMEngine
from services.generator.memory import engine_expansion_kv_bytes, expansion_kv_bytes
from services.generator.pipeline import reference_pairs, search_prompts
from services.reward.client import RewardClient
from services.reward.settings import RewardSettings
from services.reward.worker import BackgroundWorker
from tests.models.clip import build_tiny_open_clip
from tests.models.llava import build_tiny_llava, teach_sentences

PROMPTS = ["describe the image .", "what is there ?", "describe .", "what see ?"]


def scene(i: int) -> Image.Image:
    image = Image.new("RGB", (48, 48), (90, 90, 90))
    image.paste(Image.new("RGB", (20, 20), ((60 * i) % 255, (40 * i) % 255, 200)), (4 + i, 6))
    return image


def raw_tokens_per_second(
    engine: VLMEngine, rows: int, context: int, steps: int = 20, trials: int = 3
) -> float:
    """One-token forwards of `rows` rows over a plain per-row cache of `context` positions:
    the limit. The median of `trials` runs of `steps` forwards."""
    model = engine.model
    ids = torch.full((rows, context), engine.tokenizer.pad_token_id or 0)
    rates = []
    with torch.inference_mode():
        for _ in range(trials):
            cache = model(input_ids=ids, use_cache=True).cache
            mask = torch.ones(rows, context, dtype=torch.long)
            token = torch.zeros(rows, 1, dtype=torch.long)
            started = time.perf_counter()
            for step in range(steps):
                mask = torch.cat([mask, mask.new_ones(rows, 1)], dim=1)
                model(
                    input_ids=token,
                    attention_mask=mask,
                    cache=cache,
                    use_cache=True,
                    position_ids=torch.full((rows, 1), context + step),
                )
            rates.append(rows * steps / (time.perf_counter() - started))
    return statistics.median(rates)


def timed(function):
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def pairs_of(outcomes):
    return [(o.record.chosen, o.record.rejected) if o.record else None for o in outcomes]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--max-sentences", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    # 64 px images in 4 px patches: 257 image tokens, a quarter-scale LLaVA-1.5 prompt (576)
    model, processor = build_tiny_llava(seed=1, hidden=128, image_size=64, patch_size=4)
    teach_sentences(model, processor)  # so that answers have several sentences
    search = SearchConfig(
        max_new_tokens=args.max_new_tokens,  # the paper's 5 beams, 5 groups
        max_sentences=args.max_sentences,
    )
    config = replace(CSRConfig(), search=search)
    requests = [
        SearchRequest(f"p{i}", PROMPTS[i % len(PROMPTS)], f"img{i}") for i in range(args.prompts)
    ]
    images = {r.image_ref: scene(i) for i, r in enumerate(requests)}
    encoded = {}
    for key, image in images.items():
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        encoded[key] = buffer.getvalue()
    times: dict[str, list[float]] = {
        "authors": [],
        "once": [],
        "engine": [],
        "decode": [],
        "encode": [],
        "expand": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        clip = build_tiny_open_clip(tmp)
        settings = RewardSettings(
            model=str(clip), host="127.0.0.1", grpc_port=0, http_enabled=False
        )
        with BackgroundWorker(settings) as worker, RewardClient(worker.grpc_address) as client:

            def relevance(image_ref, sentences):
                return [s.relevance for s in client.score(encoded[image_ref], sentences)]

            def many(queries):
                answers = client.score_batch([(encoded[ref], s) for ref, s in queries])
                return [[s.relevance for s in own] for own in answers]

            relevance.many = many
            for _ in range(args.rounds):  # alternate, so the machine's drift hits all alike
                for name, rows in (("authors", None), ("once", 1)):
                    seconds, slow = timed(
                        lambda rows=rows: reference_pairs(
                            requests,
                            VLMEngine(model, processor, search),
                            relevance,
                            config,
                            images.get,
                            1,
                            "base",
                            prompt_rows=rows,
                        )
                    )
                    times[name].append(seconds)
                engine = VLMEngine(model, processor, search)
                seconds, fast = timed(
                    lambda engine=engine: search_prompts(
                        requests, engine, relevance, config, images.get, 1, "base"
                    )
                )
                times["engine"].append(seconds)
                times["decode"].append(engine.decode_seconds)
                times["encode"].append(engine.encode_seconds)
                times["expand"].append(engine.expand_seconds)
                if pairs_of(fast) != pairs_of(slow):
                    raise SystemExit("the engine and the reference loop produced different pairs")
    report(
        args, engine, processor, images, fast, {k: statistics.median(v) for k, v in times.items()}
    )


def report(args, engine, processor, images, fast, median) -> None:
    pairs = sum(o.record is not None for o in fast)
    steps = engine.forwards - engine.prompt_forwards
    rows = max(1, round(engine.step_rows / max(1, steps)))
    prompt = engine.prompt_text(PROMPTS[0])
    context = processor(
        images=images["img0"], text=prompt, return_tensors="pt", add_special_tokens=False
    )["input_ids"].shape[1]
    raw_tps = raw_tokens_per_second(engine, rows, context=context + 8)
    depth = sum(len(o.search.kept_per_step) for o in fast) / len(fast)
    nodes = sum(o.search.expansions for o in fast)
    print(
        f"{args.prompts} prompts, {pairs} pairs, identical pairs in every round; "
        f"{nodes} tree nodes expanded, {depth:.1f} steps a prompt; medians of {args.rounds}"
    )
    for name, label in (
        ("authors", "reference, the authors' way (prompt as 5 beam rows)"),
        ("once", "reference, prompt encoded once per node"),
        ("engine", "engine"),
    ):
        print(f"{label:53s} {median[name]:7.2f} s  ({pairs / median[name] * 60:8.1f} pairs/min)")
    print(
        f"engine vs the stricter once-per-node reference: {median['once'] / median['engine']:.1f}x"
    )
    decode_tps = engine.step_rows / median["decode"]
    batch_tps = engine.step_rows / median["engine"]
    print(
        f"engine decoding {decode_tps:8.0f} tokens/s; raw one-token forward at {rows} rows, "
        f"{context + 8} positions: {raw_tps:8.0f} tokens/s ({decode_tps / raw_tps:.2f} of the "
        f"limit); over the whole batch {batch_tps:8.0f} tokens/s ({batch_tps / raw_tps:.2f})"
    )
    rest = median["engine"] - median["encode"] - median["expand"]
    print(
        f"engine's batch: prompt encoding {median['encode']:.2f} s, expansions "
        f"{median['expand']:.2f} s (token steps {median['decode']:.2f} s), the rest (reward "
        f"calls, the search's own work) {rest:.2f} s"
    )
    print(kv_per_row())
    print(f"generator_speedup_vs_reference: {median['authors'] / median['engine']:.1f}")


def kv_per_row(prompts: int = 8, prompt_tokens: int = 640, prefix_tokens: int = 0) -> str:
    """KV MiB a beam row costs at LLaVA-1.5-7B shapes at the generator's default batch (8
    prompts; the paper's 3 kept prefixes x 5 beams, 74 new tokens), at the first sentence and
    with 128-token prefixes."""
    from transformers import LlavaConfig

    config = LlavaConfig(
        text_config={
            "model_type": "llama",
            "hidden_size": 4096,
            "num_attention_heads": 32,
            "num_hidden_layers": 32,
            "intermediate_size": 11008,
            "vocab_size": 32064,
        }
    )
    search = SearchConfig()
    kept, beams = search.keep_top + search.keep_bottom, search.num_beams
    rows = prompts * kept * beams
    figures = []
    for prefix in (prefix_tokens, 128):
        lengths = [prompt_tokens] * prompts
        copies = expansion_kv_bytes(
            config, torch.float16, lengths, kept * beams, prefix + search.max_new_tokens, False
        )
        engine = engine_expansion_kv_bytes(
            config, torch.float16, lengths, kept, beams, prefix, search.max_new_tokens
        )
        figures.append((prefix, copies / rows / 2**20, engine / rows / 2**20))
    text = "; ".join(
        f"{prefix}-token prefixes: per-row copies {before:.1f} MiB, engine {after:.1f} MiB "
        f"({before / after:.1f}x less)"
        for prefix, before, after in figures
    )
    return (
        f"KV per beam row, LLaVA-1.5-7B fp16, {prompts} prompts of {prompt_tokens} tokens, "
        f"{kept} prefixes x {beams} beams, {search.max_new_tokens} new tokens: {text}"
    )


if __name__ == "__main__":
    main()
