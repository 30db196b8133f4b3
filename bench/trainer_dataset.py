"""Memory and time of the trainer's DPO dataset: images kept as paths and read as each batch
is collated (services.trainer.dpo: build_dataset + LazyImages), against images decoded when
the dataset is built (what datasets then stores: each image re-encoded as PNG in memory).

Both run side by side on the same pairs: 640x480 JPEG photos on disk (crops and flips of
matplotlib's sample photo, each a distinct image), the tiny LLaVA's processor at CLIP's 336
pixels, TRL's vision preference collator. Memory is what pyarrow holds for the dataset
(pyarrow.total_allocated_bytes while it lives), per 1,000 pairs; time is building the
dataset per pair and collating a batch of 8.

    .venv/bin/python bench/trainer_dataset.py [--pairs 200]
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' tiny models

from csr.training import DPOExample
from services.runtime.vlm import chat_prompt, load_rgb
from services.trainer.dpo import LazyImages, build_dataset
from tests.models.llava import build_tiny_llava

BATCH = 8


def photos(directory: Path, count: int) -> list[str]:
    """count distinct 640x480 JPEGs (quality 90, as COCO's are about), named 0.jpg, 1.jpg..."""
    import matplotlib.cbook
    from PIL import Image, ImageOps

    with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")) as source:
        photo = source.convert("RGB").resize((820, 960))
    names = []
    for i in range(count):
        left, top = (i * 7) % 180, (i * 13) % 480
        image = photo.crop((left, top, left + 640, top + 480))
        image = ImageOps.mirror(image) if i % 2 else image
        image.save(directory / f"{i}.jpg", quality=90)
        names.append(f"{i}.jpg")
    return names


def eager_dataset(examples, processor, root: Path):
    """The dataset with the images decoded when it is built (they are stored as PNG)."""
    from datasets import Dataset

    return Dataset.from_list(
        [
            {
                "images": [load_rgb(str(root / e.image))],
                "prompt": chat_prompt(processor, e.prompt),
                "chosen": e.chosen,
                "rejected": e.rejected,
            }
            for e in examples
        ]
    )


def measure(build) -> tuple[object, int, float]:
    """(dataset, bytes pyarrow holds for it, seconds to build it)."""
    import pyarrow

    gc.collect()
    before = pyarrow.total_allocated_bytes()
    start = time.perf_counter()
    dataset = build()
    seconds = time.perf_counter() - start
    return dataset, pyarrow.total_allocated_bytes() - before, seconds


def collate_seconds(collate, dataset, rounds: int = 5) -> float:
    """Median seconds to collate one batch of BATCH rows (reading them from the dataset)."""
    import statistics

    times = []
    for r in range(rounds):
        rows = [dataset[(r * BATCH + i) % len(dataset)] for i in range(BATCH)]
        start = time.perf_counter()
        collate(rows)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=200)
    args = parser.parse_args()
    _, processor = build_tiny_llava(image_size=336, patch_size=14)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        examples = [
            DPOExample("describe .", name, " there is a circle .</s>", " there is a ring .</s>")
            for name in photos(root, args.pairs)
        ]
        eager, eager_bytes, eager_s = measure(lambda: eager_dataset(examples, processor, root))
        eager_collate = collate_seconds(DataCollatorForVisionPreference(processor), eager)
        del eager
        lazy, lazy_bytes, lazy_s = measure(lambda: build_dataset(examples, processor))
        lazy_collate = collate_seconds(
            LazyImages(processor, lambda p: load_rgb(str(root / p))), lazy
        )
    per_1000 = 1000 / args.pairs
    print(f"{args.pairs} pairs of 640x480 JPEGs; per 1,000 pairs:")
    for name, size, built, collated in (
        ("images decoded at build (before)", eager_bytes, eager_s, eager_collate),
        ("paths, read at collate (now)   ", lazy_bytes, lazy_s, lazy_collate),
    ):
        print(
            f"  {name}: {size * per_1000 / 2**20:9.2f} MiB, build {built * 1000 / args.pairs:6.2f} "
            f"ms/pair, collate {collated * 1000:6.1f} ms per batch of {BATCH}"
        )
    print(f"build time ratio (before / now): {eager_s / lazy_s:.1f}")
    print(f"collate time ratio (now / before): {lazy_collate / eager_collate:.2f}")
    print(f"dataset_memory_ratio: {eager_bytes / max(lazy_bytes, 1):.0f}")


if __name__ == "__main__":
    main()
