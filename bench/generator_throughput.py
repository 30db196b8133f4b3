"""Generator engine against the authors'-way reference loop, same model, prompts and reward.

(a) reference: one search call per tree node with a full re-encode of image and prompt, and
one relevance call per sentence; (b) the engine: prompts encoded once, all prefixes of all
prompts expanded in one batched beam search, one round of concurrent relevance calls per
step for all prompts (the reward worker batches them into one forward). Both
run on a tiny random LLaVA and a real reward worker (tiny open_clip) in this process, and
must produce the same pairs. Also prints the engine's generated tokens/s against the
model's raw batched one-token forward at the same batch size (the limit).

    .venv/bin/python bench/generator_throughput.py [--prompts 6]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from dataclasses import replace

import torch
from PIL import Image

from csr.config import CSRConfig, SearchConfig
from csr.search import SearchRequest
from services.generator.engine import VLMEngine
from services.generator.pipeline import reference_pairs, search_prompts
from services.generator.tiny import build_tiny_llava, teach_sentences
from services.reward.client import RewardClient
from services.reward.settings import RewardSettings
from services.reward.tiny import build_tiny_open_clip
from services.reward.worker import BackgroundWorker

PROMPTS = ["describe the image .", "what is there ?", "describe .", "what see ?"]


def scene(i: int) -> Image.Image:
    image = Image.new("RGB", (48, 48), (90, 90, 90))
    image.paste(Image.new("RGB", (20, 20), ((60 * i) % 255, (40 * i) % 255, 200)), (4 + i, 6))
    return image


def raw_tokens_per_second(engine: VLMEngine, rows: int, context: int, steps: int = 20) -> float:
    """One-token forwards of `rows` rows over a cache of `context` positions: the limit."""
    model = engine.model
    ids = torch.full((rows, context), engine.tokenizer.pad_token_id or 0)
    with torch.inference_mode():
        cache = model(input_ids=ids, use_cache=True).past_key_values
        mask = torch.ones(rows, context, dtype=torch.long)
        token = torch.zeros(rows, 1, dtype=torch.long)
        started = time.perf_counter()
        for step in range(steps):
            mask = torch.cat([mask, mask.new_ones(rows, 1)], dim=1)
            model(input_ids=token, attention_mask=mask, past_key_values=cache, use_cache=True,
                  position_ids=torch.full((rows, 1), context + step))
        return rows * steps / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--max-sentences", type=int, default=4)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    # 64 px images in 4 px patches: 257 image tokens, a quarter-scale LLaVA-1.5 prompt (576)
    model, processor = build_tiny_llava(seed=1, hidden=128, image_size=64, patch_size=4)
    teach_sentences(model, processor)  # so that answers have several sentences
    search = SearchConfig(max_new_tokens=args.max_new_tokens, max_sentences=args.max_sentences)  # the paper's 5 beams, 5 groups
    config = replace(CSRConfig(), search=search)
    requests = [SearchRequest(f"p{i}", PROMPTS[i % len(PROMPTS)], f"img{i}")
                for i in range(args.prompts)]
    images = {r.image_ref: scene(i) for i, r in enumerate(requests)}
    encoded = {}
    for key, image in images.items():
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        encoded[key] = buffer.getvalue()
    with tempfile.TemporaryDirectory() as tmp:
        clip = build_tiny_open_clip(tmp)
        settings = RewardSettings(model=str(clip), host="127.0.0.1", grpc_port=0,
                                  http_enabled=False)
        with BackgroundWorker(settings) as worker, RewardClient(worker.grpc_address) as client:
            def relevance(image_ref, sentences):
                return [s.relevance for s in client.score(encoded[image_ref], sentences)]

            relevance.many = lambda queries: client.concurrent(lambda q: relevance(*q), queries)

            engine = VLMEngine(model, processor, search)
            started = time.perf_counter()
            slow = reference_pairs(requests, engine, relevance, config, images.get, 1, "base")
            reference_s = time.perf_counter() - started
            engine = VLMEngine(model, processor, search)
            started = time.perf_counter()
            fast = search_prompts(requests, engine, relevance, config, images.get, 1, "base")
            engine_s = time.perf_counter() - started
    same = [(o.record.chosen, o.record.rejected) if o.record else None for o in fast] == \
        [(o.record.chosen, o.record.rejected) if o.record else None for o in slow]
    pairs = sum(o.record is not None for o in fast)
    steps = engine.forwards - args.prompts
    rows = max(1, round(engine.step_rows / max(1, steps)))
    engine_tps = engine.step_rows / engine_s
    prompt = engine.prompt_text(PROMPTS[0])
    context = processor(images=images["img0"], text=prompt, return_tensors="pt")["input_ids"].shape[1]
    raw_tps = raw_tokens_per_second(engine, rows, context=context + 8)
    depth = sum(len(o.search.kept_per_step) for o in fast) / len(fast)
    nodes = sum(o.search.expansions for o in fast)
    print(f"{args.prompts} prompts, {pairs} pairs, identical pairs: {same}; "
          f"{nodes} tree nodes expanded, {depth:.1f} steps a prompt")
    print(f"reference loop: {reference_s:7.2f} s  ({pairs / reference_s * 60:8.1f} pairs/min)")
    print(f"engine:         {engine_s:7.2f} s  ({pairs / engine_s * 60:8.1f} pairs/min)")
    print(f"engine generated {engine_tps:8.0f} tokens/s; raw one-token forward at batch {rows}: "
          f"{raw_tps:8.0f} tokens/s ({engine_tps / raw_tps:.2f} of the limit)")
    if not same:
        raise SystemExit("the engine and the reference loop produced different pairs")
    print(f"generator_speedup_vs_reference: {reference_s / engine_s:.1f}")


if __name__ == "__main__":
    main()
