"""The GPU check: LLaVA-1.5-7B, Qwen2-VL-7B and CLIP ViT-L-14-336 at their true shapes (full
depth, random weights, nothing downloaded) through the project's own code paths.

For each VLM: prompt encoding of one generator batch (the default 8 prompts), one expansion
of that batch, the widest expansion the defaults allow (3 kept prefixes x 5 beams per
prompt, long prefixes) with its measured KV next to services/generator/memory.py's
accounting, one whole search batch (pipeline.search_prompts, a seeded stand-in for R_I, the
logits of "." and EOS raised so random weights write sentences), and a DPO update through
services/trainer/dpo.py at the default LoRA r128/a256 (s/step, peak memory). Then the reward
backend's sentences/s on ViT-L-14-336. Memory figures are the CUDA allocator's peaks (on a
CPU: the process's peak RSS). Each part runs under its own time limit; a failing part is a
row of the table and the exit status is 1.

    python bench/gpu_check.py                # one GPU, bf16: budget 10 minutes on an H200
    python bench/gpu_check.py --tiny         # small widths on a CPU (a test runs this)
    python bench/gpu_check.py --accounting   # what each service needs, computed (README)

The table is `| part | figure | value | unit |` rows; the headline is the last line.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import resource
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the real-kind models live with the tests

from bench import gpu_accounting  # noqa: E402
from csr.config import CSRConfig, DPOSettings, SearchConfig  # noqa: E402
from csr.search import Prefix, SearchRequest  # noqa: E402
from services.generator.engine import VLMEngine  # noqa: E402
from services.generator.memory import engine_expansion_kv_bytes, expansion_kv_bytes  # noqa: E402
from services.generator.settings import GeneratorSettings  # noqa: E402
from tests.models import real_kinds  # noqa: E402

GIB = 1024**3
PROMPTS = (
    "Describe this image in detail.",
    "What is in the photo?",
    "Describe the image.",
    "What do you see in this picture? Describe it in detail.",
)
SIZES = ((640, 480), (500, 375), (480, 640), (640, 427))  # COCO's usual shapes


class Meter:
    """Time and peak memory on the device (CUDA allocator) or the process (peak RSS)."""

    def __init__(self, device: str):
        self.device = device
        self.cuda = device.startswith("cuda")

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def reset(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def allocated(self) -> int:
        return torch.cuda.memory_allocated() if self.cuda else 0

    def peak(self) -> int:
        if self.cuda:
            return torch.cuda.max_memory_allocated()
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Table:
    def __init__(self, mib: bool = False) -> None:
        self.mib = mib
        self.rows: list[tuple[str, str, str, str]] = []
        self.failed: list[str] = []

    def add(self, part: str, figure: str, value: float, unit: str, digits: int = 2) -> None:
        self.rows.append((part, figure, f"{value:.{digits}f}", unit))
        print(f"{part}: {figure} = {value:.{digits}f} {unit}", file=sys.stderr, flush=True)

    def memory(self, part: str, figure: str, size: float) -> None:
        """A memory figure in GiB, or in MiB for the small ones of --tiny."""
        if self.mib:
            self.add(part, figure, size / 1024**2, "MiB", 1)
        else:
            self.add(part, figure, size / GIB, "GiB")

    def fail(self, part: str, message: str) -> None:
        self.failed.append(part)
        self.rows.append((part, "error", message.replace("|", "/")[:200], ""))

    def print(self) -> None:
        print("| part | figure | value | unit |")
        print("|---|---|---|---|")
        for row in self.rows:
            print("| " + " | ".join(row) + " |")


@contextlib.contextmanager
def limit(table: Table, part: str, seconds: int):
    """Run a part for at most `seconds`; any failure becomes an error row."""

    def expired(*_):
        raise TimeoutError(f"{part} ran past its {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    except Exception as e:  # every part reports and the check goes on
        traceback.print_exc()
        table.fail(part, f"{type(e).__name__}: {e}")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def build(kind: str, args):
    if kind == "llava":
        builder = real_kinds.build_llava
    else:  # Qwen2-VL's processor bounded as the services bound it, at their defaults
        builder = functools.partial(real_kinds.build_qwen2_vl, **service_pixel_bounds())
    if args.tiny:
        return builder(text_layers=2, vision_layers=2, tiny=True, device=args.device)
    text, vision = (32, 24) if kind == "llava" else (28, 32)
    return builder(text_layers=text, vision_layers=vision, dtype=args.dtype, device=args.device)


def service_pixel_bounds() -> dict[str, int]:
    """The generator's and the trainer's default image bounds (VLMSettings), not the
    environment's: the check measures what a deployment at the defaults runs."""
    from services.runtime.settings import VLMSettings

    fields = VLMSettings.model_fields
    return {name: fields[name].default for name in ("min_pixels", "max_pixels")}


def sentence_nudge(model, tokenizer, after: int = 8):
    """Raise the logits of "." and EOS from the `after`-th token of a sentence on, relative to
    each row's spread, so that random weights write sentences and a search runs several
    steps. A forward hook; a forward of more than one token (a prompt, or a prefix fed on
    top of it) starts the count again."""
    dot, eos = tokenizer.convert_tokens_to_ids("."), tokenizer.eos_token_id
    steps = [0]

    def hook(module, inputs, output):
        steps[0] = steps[0] + 1 if output.shape[-2] == 1 else 0
        if steps[0] >= after - 1:
            spread = output.float().std(dim=-1, keepdim=True).to(output.dtype)[..., 0]
            output[..., -1, dot] += 4.0 * spread[..., -1]
            output[..., -1, eos] += 3.5 * spread[..., -1]
        return output

    return model.get_output_embeddings().register_forward_hook(hook)


def plain_tokens(engine: VLMEngine, count: int, seed: int) -> tuple[int, ...]:
    """A generated prefix of `count` ordinary tokens (no special token, no sentence end)."""
    from services.generator.tokens import special_ids

    avoid = set(engine.stop_ids) | special_ids(engine.tokenizer)
    generator = torch.Generator().manual_seed(seed)
    tokens: list[int] = []
    while len(tokens) < count:
        token = int(torch.randint(len(engine.tokenizer), (1,), generator=generator))
        if token not in avoid:
            tokens.append(token)
    return tuple(tokens)


def _timed(meter: Meter, work):
    meter.reset()
    start_bytes = meter.allocated()
    meter.sync()
    start = time.perf_counter()
    result = work()
    meter.sync()
    return result, time.perf_counter() - start, meter.peak(), start_bytes


def engine_part(kind: str, model, processor, args, meter: Meter, table: Table) -> None:
    """Encoding, one expansion, the widest expansion: times, peaks, KV against the accounting."""
    engine = VLMEngine(model, processor, SearchConfig())
    requests = [
        SearchRequest(f"p{i}", PROMPTS[i % len(PROMPTS)], f"i{i}") for i in range(args.batch)
    ]
    images = {r.image_ref: real_kinds.photo(*SIZES[i % 4], seed=i) for i, r in enumerate(requests)}
    items = [(r.prompt_id, r.prompt, images[r.image_ref]) for r in requests]
    _, seconds, peak, _ = _timed(meter, lambda: engine.encode_prompts(items))
    lengths = [_prompt_length(engine, r.prompt, images[r.image_ref]) for r in requests]
    table.add(kind, f"prompt encoding, {len(items)} prompts", seconds, "s")
    table.add(kind, "prompt tokens (mean)", sum(lengths) / len(lengths), "tokens", 0)
    table.memory(kind, "prompt encoding peak memory", peak)
    first = [Prefix(r, (), None) for r in requests]
    rows = engine.step_rows
    _, seconds, peak, _ = _timed(meter, lambda: engine.expand(first))
    table.add(kind, f"first expansion, {len(first)} prefixes x 5 beams", seconds, "s")
    table.add(
        kind,
        "first expansion beam-row tokens/s",
        (engine.step_rows - rows) / seconds,
        "tokens/s",
        0,
    )
    table.memory(kind, "first expansion peak memory", peak)
    _widest(kind, engine, requests, lengths, args, meter, table)
    for r in requests:
        engine.release(r.prompt_id)


def _prompt_length(engine: VLMEngine, prompt: str, image) -> int:
    inputs = engine.processor(
        images=image, text=engine.prompt_text(prompt), return_tensors="pt", add_special_tokens=False
    )
    return int(inputs["input_ids"].shape[1])


def _widest(kind, engine, requests, lengths, args, meter: Meter, table: Table) -> None:
    search = engine.search
    kept = search.keep_top + search.keep_bottom
    own = args.prefix_tokens
    prefixes = [
        Prefix(r, (), plain_tokens(engine, own, seed=7 * i + k))
        for i, r in enumerate(requests)
        for k in range(kept)
    ]
    _, seconds, peak, start = _timed(meter, lambda: engine.expand(prefixes))
    rows, generated = kept * search.num_beams, own + search.max_new_tokens
    dtype = next(engine.model.parameters()).dtype
    config = engine.model.config
    copies = expansion_kv_bytes(config, dtype, lengths, rows, generated, shared=False)
    shared = expansion_kv_bytes(config, dtype, lengths, rows, generated, shared=True)
    table.add(kind, f"widest expansion, {len(prefixes)} prefixes of {own} tokens", seconds, "s")
    table.memory(kind, "widest expansion peak memory", peak)
    if meter.cuda:
        table.memory(kind, "widest expansion peak above its start", (peak - start))
    table.memory(kind, "widest expansion KV accounted, prompt copied per row", copies)
    table.memory(kind, "widest expansion KV accounted, prompt shared", shared)
    held = engine_expansion_kv_bytes(
        config, dtype, lengths, kept, search.num_beams, own, search.max_new_tokens
    )
    table.memory(kind, "widest expansion KV accounted, the engine's layout", held)


def search_part(kind: str, model, processor, args, meter: Meter, table: Table) -> None:
    """One whole search batch at the defaults, R_I a seeded stand-in (nothing to compare)."""
    from services.generator.pipeline import search_prompts

    engine = VLMEngine(model, processor, SearchConfig())
    requests = [
        SearchRequest(f"s{i}", PROMPTS[i % len(PROMPTS)], f"i{i}") for i in range(args.batch)
    ]
    images = {r.image_ref: real_kinds.photo(*SIZES[i % 4], seed=i) for i, r in enumerate(requests)}
    generator = torch.Generator().manual_seed(0)

    def relevance(image_ref, sentences):
        return [float(torch.rand((), generator=generator)) * 40 for _ in sentences]

    handle = sentence_nudge(model, processor.tokenizer)
    try:
        run = lambda: search_prompts(  # noqa: E731
            requests, engine, relevance, CSRConfig(), images.__getitem__, 1, "base"
        )
        outcomes, seconds, peak, _ = _timed(meter, run)
    finally:
        handle.remove()
    pairs = sum(o.record is not None for o in outcomes)
    sentences = [len(p.sentences) for o in outcomes for p in o.search.finished] or [0]
    table.add(kind, f"search batch, {len(requests)} prompts", seconds, "s")
    table.add(kind, "search batch pairs", pairs, "pairs", 0)
    table.add(kind, "search pairs per minute", 60 * pairs / seconds, "pairs/min", 1)
    table.add(kind, "sentences per finished response", sum(sentences) / len(sentences), "", 1)
    table.memory(kind, "search batch peak memory", peak)


def dpo_part(kind: str, model, processor, args, meter: Meter, table: Table) -> None:
    """A DPO update at the default LoRA (r128, alpha 256), batch 1, images from files."""
    from csr.training import DPOExample
    from services.runtime.vlm import load_rgb
    from services.trainer.dpo import train_update

    words = ("there", "is", "a", "dog", "cat", "man", "table", "tree", "car", "red", "blue")
    generator = torch.Generator().manual_seed(1)

    def response(sentences: int) -> str:
        picks = torch.randint(len(words), (sentences, 10), generator=generator).tolist()
        return " ".join(" ".join(words[i] for i in row).capitalize() + "." for row in picks)

    eos = processor.tokenizer.eos_token
    with tempfile.TemporaryDirectory() as root:
        examples = []
        for k in range(args.pairs):
            real_kinds.photo(*SIZES[k % 4], seed=k).save(Path(root) / f"{k}.jpg")
            chosen, rejected = response(8), response(6)
            examples.append(
                DPOExample(PROMPTS[k % 4], f"{k}.jpg", f"{chosen}{eos}", rejected + eos)
            )
        dpo = DPOSettings()
        model.train()
        run = lambda: train_update(  # noqa: E731
            model, processor, None, examples, lambda p: load_rgb(str(Path(root) / p)), dpo,
            Path(root) / "update",
        )  # fmt: skip
        with contextlib.redirect_stdout(sys.stderr):  # the trainer prints its log lines
            result, seconds, peak, _ = _timed(meter, run)
    model.eval()
    step = result.metrics.get("train_runtime", seconds) / max(result.steps, 1)
    table.add(
        kind, f"DPO r{dpo.lora_r}/a{dpo.lora_alpha}, {result.steps} steps of 1 pair", seconds, "s"
    )
    table.add(kind, "DPO s/step", step, "s")
    table.memory(kind, "DPO peak memory", peak)


def vlm(kind: str, args, meter: Meter, table: Table) -> None:
    built: list = []
    with limit(table, f"{kind}/build", args.seconds(120)):
        start = time.perf_counter()
        built[:] = build(kind, args)
        meter.sync()
        table.add(kind, "build", time.perf_counter() - start, "s", 1)
    if not built:
        return
    model, processor = built
    table.add(kind, "parameters", sum(p.numel() for p in model.parameters()) / 1e6, "M", 1)
    if meter.cuda:
        table.memory(kind, "weights", meter.allocated())
    else:
        table.memory(kind, "process after the build", meter.peak())
    for name, part in (("engine", engine_part), ("search", search_part), ("dpo", dpo_part)):
        with limit(table, f"{kind}/{name}", args.seconds(args.part_seconds)):
            part(kind, model, processor, args, meter, table)
    del model, processor, built
    meter.reset()


def reward(args, meter: Meter, table: Table) -> None:
    """Sentences/s of the reward backend (open_clip, as loaded from a local directory)."""
    from services.reward.models import load_backend
    from services.reward.settings import RewardSettings

    with tempfile.TemporaryDirectory() as root:
        layers = (2, 2) if args.tiny else (24, 12)
        directory = real_kinds.build_clip_dir(Path(root) / "clip", *layers, tiny=args.tiny)
        backend = load_backend("open_clip", str(directory), device=args.device)
    batch = RewardSettings().max_batch_size
    sentences = [f"There is a {w} next to the table." for w in PROMPTS[0].split()] * 64
    sentences = sentences[: 4 * batch]
    image = real_kinds.photo(640, 480)
    backend.encode_images([image]), backend.encode_texts(sentences[:batch])  # warm up
    _, seconds, peak, _ = _timed(
        meter,
        lambda: [
            backend.encode_texts(sentences[i : i + batch]) for i in range(0, len(sentences), batch)
        ],
    )
    _, image_seconds, _, _ = _timed(
        meter, lambda: [backend.encode_images([image]) for _ in range(8)]
    )
    table.add(
        "reward", f"sentences/s (batches of {batch})", len(sentences) / seconds, "sentences/s", 0
    )
    table.add("reward", "image encoding", 1000 * image_seconds / 8, "ms", 1)
    table.memory("reward", "peak memory", peak)


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="small widths, on the CPU")
    parser.add_argument("--accounting", action="store_true", help="print what each service needs")
    parser.add_argument("--only", default="llava,qwen2-vl,reward", help="comma-separated parts")
    parser.add_argument(
        "--batch", type=int, default=None, help="prompts per batch (default: the generator's)"
    )
    parser.add_argument("--device", default=None, help="default: cuda, or cpu with --tiny")
    args = parser.parse_args(argv)
    args.device = args.device or ("cpu" if args.tiny else "cuda")
    args.dtype = torch.float32 if args.device == "cpu" else torch.bfloat16
    args.batch = args.batch or (2 if args.tiny else GeneratorSettings().batch_size)
    args.prefix_tokens = 20 if args.tiny else 180
    args.pairs = 2 if args.tiny else 4
    args.part_seconds = 150
    deadline = time.monotonic() + (900 if args.tiny else 570)  # the whole check's budget

    def seconds(wanted: int) -> int:
        """A part's limit: what it may take, within what is left of the budget."""
        return max(1, min(wanted, int(deadline - time.monotonic())))

    args.seconds = seconds
    return args


def main(argv=None) -> int:
    args = parse(argv)
    if args.accounting:
        print(gpu_accounting.markdown(ROOT))
        return 0
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: run with --tiny on a CPU", file=sys.stderr)
        return 2
    if args.tiny:
        torch.set_num_threads(1)  # tiny tensors: threads cost more than they give
    meter, table = Meter(args.device), Table(mib=args.tiny)
    start = time.perf_counter()
    parts = args.only.split(",")
    for kind in ("llava", "qwen2-vl"):
        if kind in parts:
            vlm(kind, args, meter, table)
    if "reward" in parts:
        with limit(table, "reward", args.seconds(120)):
            reward(args, meter, table)
    table.add("all", "wall time", time.perf_counter() - start, "s", 0)
    table.print()
    headline = [r for r in table.rows if r[1] == "search pairs per minute"]
    print(f"llava_search_pairs_per_min: {headline[0][2] if headline else 'n/a'}")
    return 1 if table.failed else 0


if __name__ == "__main__":
    sys.exit(main())
