"""Trainer service overhead against a bare TRL DPOTrainer loop, and adapter hand-over time.

(a) The same pairs, tiny LLaVA and DPO settings, trained alternately (A B A B ...) by the
service (TrainerLoop: read from Redis, dataset, DPOTrainer with its Prometheus and TensorBoard
callbacks, plot, atomic publication with checksums, acknowledgement) and by a bare
DPOTrainer.train() on a ready dataset. The headline is the DPO step time (train() wall time
per optimizer step) of the service against the bare loop; the service's fixed cost per
update (model load, dataset, plot, publication) is printed beside it.
(b) From "adapter published" (the announcement) to "generator serving it", for a running
generator loop told by Redis pub/sub, and by the admin API.

    .venv/bin/python bench/trainer_step.py [--pairs 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' toy trainer world

from csr.training import dpo_example
from services.runtime import embedded_redis
from services.runtime.vlm import load_rgb, response_lead
from services.trainer.dpo import LazyImages, build_dataset, dpo_config, policy_model
from tests.integration.trainer_world import CONFIG, base_model, make_world, running_generator


def bare_step_seconds(world, records, config) -> float:
    from trl import DPOTrainer

    processor = world.trainer().processor
    lead = response_lead(processor)
    examples = [dpo_example(r, processor.tokenizer.eos_token, lead) for r in records]
    dataset = build_dataset(examples, processor)
    with tempfile.TemporaryDirectory() as out:
        args = dpo_config(config.dpo, Path(out), seed=0, checkpoint_steps=0, device="cpu")
        timer = _TrainTimer()
        trainer = DPOTrainer(
            model=policy_model(base_model(), None, config.dpo),
            args=args,
            processing_class=processor,
            train_dataset=dataset,
            data_collator=LazyImages(processor, lambda p: load_rgb(str(world.images / p))),
            callbacks=[timer.callback],
        )
        trainer.train()
        return timer.seconds / trainer.state.global_step


class _TrainTimer:
    """A TrainerCallback timing train() from its first to its last callback."""

    def __init__(self):
        from transformers import TrainerCallback

        timer = self

        class Callback(TrainerCallback):
            def on_train_begin(self, *args, **kwargs):
                timer.started = time.perf_counter()

            def on_train_end(self, *args, **kwargs):
                timer.seconds = time.perf_counter() - timer.started

        self.callback = Callback()


def service_step_seconds(root: Path, count: int, config) -> tuple[float, float]:
    """(seconds per DPO step inside train(), fixed seconds of the rest of the update)."""
    from services.trainer import service

    world = make_world(root)
    timer = _TrainTimer()
    real = service.train_update
    service.train_update = lambda *a, **k: real(
        *a, **{**k, "callbacks": [*k.get("callbacks", []), timer.callback]}
    )
    try:
        world.queue(count=count)
        world.answer(count=count)
        trainer = world.trainer(config=config, tensorboard=True)
        started = time.perf_counter()
        assert trainer.run_once(block_ms=1) == "published"
        whole = time.perf_counter() - started
        return timer.seconds / trainer.last_result.steps, whole - timer.seconds
    finally:
        service.train_update = real
        embedded_redis.stop(world.redis)


def handover_seconds(root: Path) -> tuple[float, float]:
    """(pub/sub, admin API): announcement to the generator serving the adapter."""
    import grpc

    from csr_api.v1 import generator_pb2, generator_pb2_grpc
    from services.runtime.adapters import write_manifest
    from services.runtime.announce import announce_adapter

    world = make_world(root)
    trainer = world.trainer(config=replace(CONFIG, iterations=1))  # queues no iteration 2:
    world.queue(count=4)  # the generator stays idle
    world.answer(count=4)
    trainer.run_once(block_ms=1)  # version 1
    try:
        with running_generator(world) as (generator, port):
            path = str(trainer.store.path(1))
            started = time.perf_counter()
            announce_adapter(world.redis, path, "1")
            while generator.adapter_version != "1":
                time.sleep(0.0005)
            pubsub = time.perf_counter() - started
            copy = trainer.store.root / "copy-2"  # the same weights as a version 2
            shutil.copytree(path, copy)
            write_manifest(copy, "2", "tiny-llava")
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = generator_pb2_grpc.GeneratorAdminStub(channel)
                stub.Status(generator_pb2.StatusRequest(), timeout=10)  # connected
                started = time.perf_counter()
                stub.LoadAdapter(
                    generator_pb2.LoadAdapterRequest(path=str(copy), version="2"), timeout=60
                )
                admin = time.perf_counter() - started
        return pubsub, admin
    finally:
        embedded_redis.stop(world.redis)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    config = replace(CONFIG, dpo=replace(CONFIG.dpo, batch_size=2))
    bare, service, fixed = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        reference = make_world(Path(tmp) / "reference")
        reference.queue(count=args.pairs)
        records = reference.answer(count=args.pairs)
        for round_ in range(args.rounds):  # alternate, so drift hits both alike
            bare.append(bare_step_seconds(reference, records, config))
            step, rest = service_step_seconds(Path(tmp) / f"s{round_}", args.pairs, config)
            service.append(step)
            fixed.append(rest)
        embedded_redis.stop(reference.redis)
        pubsub, admin = handover_seconds(Path(tmp) / "handover")
    b, s = statistics.median(bare), statistics.median(service)
    print(f"{args.pairs} pairs, batch 2, {args.rounds} rounds alternating")
    print(
        f"bare DPOTrainer:  {b * 1000:7.1f} ms/step  (rounds: "
        f"{', '.join(f'{x * 1000:.0f}' for x in bare)})"
    )
    print(
        f"trainer service:  {s * 1000:7.1f} ms/step  (rounds: "
        f"{', '.join(f'{x * 1000:.0f}' for x in service)})"
    )
    print(
        f"service's fixed cost per update (model load, dataset, plot, publication, ack): "
        f"{statistics.median(fixed):.2f} s"
    )
    print(
        f"adapter published -> generator serving it: pub/sub {pubsub * 1000:.1f} ms, "
        f"admin API {admin * 1000:.1f} ms"
    )
    print(f"trainer_overhead_percent: {(s / b - 1) * 100:.1f}")


if __name__ == "__main__":
    main()
