"""The trainer on a real (embedded) Redis and a tiny LLaVA: the LoRA update, the reference
model, publication, acknowledgement after a crash, dead letters and staleness."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from csr.config import ScheduleConfig
from csr.training import dpo_example
from services.runtime import embedded_redis
from services.runtime.keys import DEAD_LETTERS
from services.runtime.vlm import chat_prompt
from services.trainer.dpo import train_update
from tests.integration.trainer_world import CONFIG, base_model, make_world, running_generator


@pytest.fixture
def world(tmp_path):
    world = make_world(tmp_path)
    yield world
    embedded_redis.stop(world.redis)


def run_iteration(trainer, world, iteration: int) -> None:
    world.answer()
    assert trainer.run_once(block_ms=1) == "published"
    assert trainer.iteration == iteration + 1


def test_lora_update_changes_adapter_weights_and_leaves_base_untouched(world, tmp_path):
    world.queue()
    records = world.answer()
    base = base_model()
    before = {name: p.detach().clone() for name, p in base.named_parameters()}
    result = train_update(
        base,
        world.trainer().processor,
        None,
        [dpo_example(r, "</s>", " ") for r in records],
        lambda p: __import__("PIL.Image").Image.open(world.images / p),
        CONFIG.dpo,
        tmp_path / "out",
    )
    after = dict(result.model.named_parameters())
    lora = {n: p for n, p in after.items() if ".lora_" in n and ".default." in n}
    assert lora and all("language_model" in n for n in lora)  # vision tower: no LoRA
    moved = [n for n, p in lora.items() if "lora_B" in n and p.abs().max() > 0]
    assert len(moved) == len([n for n in lora if "lora_B" in n])  # B starts at 0, all moved
    for name, weight in before.items():
        peft_name = (
            "base_model.model." + name.replace(".weight", ".base_layer.weight")
            if f"base_model.model.{name.replace('.weight', '.base_layer.weight')}" in after
            else "base_model.model." + name
        )
        assert torch.equal(after[peft_name], weight), name
    assert result.steps == 2 and result.metrics["rewards/margins"] != 0


def completion_logps(model, processor, image, prompt: str, completion: str) -> float:
    """log p(completion | image, prompt), summed over its tokens, by a plain forward."""
    inputs = processor(
        images=image,
        text=chat_prompt(processor, prompt),
        return_tensors="pt",
        add_special_tokens=False,
    )
    tokens = processor.tokenizer(completion, add_special_tokens=False, return_tensors="pt")[
        "input_ids"
    ]
    ids = torch.cat([inputs["input_ids"], tokens], dim=1)
    with torch.no_grad():
        logits = model(input_ids=ids, pixel_values=inputs["pixel_values"]).logits
    logps = torch.log_softmax(logits[0, -tokens.shape[1] - 1 : -1].float(), dim=-1)
    return float(logps.gather(1, tokens[0][:, None]).sum())


def test_the_reference_is_the_previous_iterations_model(world):
    from peft import PeftModel
    from PIL import Image
    from safetensors.torch import load_file

    config = replace(CONFIG, dpo=replace(CONFIG.dpo, batch_size=4))  # one step = every pair
    trainer = world.trainer(config=config, keep_last_model=True)
    world.queue()
    run_iteration(trainer, world, 1)
    records = world.answer()  # iteration 2, queued by the trainer with adapter 1
    assert {r.adapter_version for r in records} == {"1"} and len(records) == 4
    assert trainer.run_once(block_ms=1) == "published"
    first = trainer.last_result.log[0]
    # Policy and reference are the same model before the first step: rewards start at 0...
    assert first["rewards/chosen"] == pytest.approx(0, abs=1e-6)
    assert first["rewards/rejected"] == pytest.approx(0, abs=1e-6)
    # ...and that model is base + adapter 1, computed here from the files on disk.
    eos = trainer.processor.tokenizer.eos_token
    v1 = PeftModel.from_pretrained(base_model(), str(trainer.store.path(1))).eval()
    base = base_model().eval()

    def mean_logps(model):
        return sum(
            completion_logps(
                model,
                trainer.processor,
                Image.open(world.images / r.image).convert("RGB"),
                r.prompt,
                dpo_example(r, eos, trainer.lead).chosen,
            )
            for r in records
        ) / len(records)

    assert first["logps/chosen"] == pytest.approx(mean_logps(v1), abs=1e-3)
    assert abs(mean_logps(base) - mean_logps(v1)) > 0.05  # the base would have been caught
    saved = load_file(str(trainer.store.path(1) / "adapter_model.safetensors"))
    ref = {n: p for n, p in trainer.last_result.model.named_parameters() if ".ref." in n}
    assert len(ref) == len(saved)
    for name, weight in saved.items():
        assert torch.equal(ref[name.replace(".weight", ".ref.weight")], weight)


def test_publication_is_atomic_with_a_manifest_and_keeps_k_versions(world):
    trainer = world.trainer()
    world.queue()
    run_iteration(trainer, world, 1)
    manifest = trainer.store.manifest(1)
    assert manifest["version"] == "1" and manifest["iteration"] == 1
    assert manifest["base_model"] == "tiny-llava" and manifest["pairs"] == 4
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(manifest["files"])
    assert {"loss", "rewards/margins", "rewards/accuracies"} <= set(manifest["metrics"])
    assert (trainer.options.work_dir / "plots" / "update-1.png").stat().st_size > 1000
    assert world.redis.xpending("csr:pairs", "trainers")["pending"] == 0

    def crash(directory):
        (directory / "adapter_model.safetensors").write_bytes(b"half")
        raise OSError("disk full (simulated)")

    with pytest.raises(OSError):
        trainer.store.publish(crash, 2, "tiny-llava")
    assert trainer.store.versions() == [1] and not list(trainer.store.root.glob(".staging-*"))
    for version in (2, 3):
        trainer.store.publish(
            lambda d: (d / "adapter_model.safetensors").write_bytes(b"x"), version, "tiny-llava"
        )
    trainer.store.keep = 2
    trainer.store.prune()
    assert trainer.store.versions() == [2, 3]


@pytest.mark.parametrize("schedule", ["iteration", "online"])
def test_a_crash_before_acknowledging_redelivers_without_double_training(world, schedule):
    config = replace(CONFIG, schedule=ScheduleConfig(schedule, online_every=4))
    crashed = world.trainer(config=config)
    world.queue()
    world.answer()

    def die(entry_ids):
        raise KeyboardInterrupt("killed between publishing and acknowledging")

    crashed.pairs.ack = die
    with pytest.raises(KeyboardInterrupt):
        crashed.run_once(block_ms=1)
    assert crashed.store.versions() == [1]
    assert world.redis.xpending("csr:pairs", "trainers")["pending"] == 4
    restarted = world.trainer(config=config)  # same consumer: its pending records come back
    assert restarted.run_once(block_ms=1) in ("waiting", "published")
    assert restarted.updates == 0 and restarted.store.versions() == [1]
    assert restarted.pairs.stale_count() == 0  # recognised as trained, not dropped as stale
    assert world.redis.xpending("csr:pairs", "trainers")["pending"] == 0
    assert restarted.iteration == 2


def test_a_crash_during_training_retrains_the_same_pairs_once(world, monkeypatch):
    from services.trainer import service

    crashed = world.trainer()
    world.queue()
    world.answer()
    real = service.train_update
    monkeypatch.setattr(
        service, "train_update", lambda *a, **k: (_ for _ in ()).throw(MemoryError("killed"))
    )
    with pytest.raises(MemoryError):
        crashed.run_once(block_ms=1)
    assert crashed.store.versions() == []
    monkeypatch.setattr(service, "train_update", real)
    restarted = world.trainer()
    assert restarted.run_once(block_ms=1) == "published"
    assert restarted.updates == 1 and restarted.store.manifest(1)["pairs"] == 4


def test_malformed_records_land_in_the_dead_letter_stream(world):
    trainer = world.trainer()
    world.queue()
    good = world.answer()
    bad = json.loads(good[0].to_json())
    for raw in (
        "not json",
        json.dumps({**bad, "schema_version": 99}),
        json.dumps({k: v for k, v in bad.items() if k != "chosen"}),
        json.dumps({**bad, "adapter_version": "v7"}),
    ):
        world.redis.xadd("csr:pairs", {"record": raw})
    world.redis.xadd("csr:pairs", {"other": "field"})
    assert trainer.run_once(block_ms=1) == "published"
    dead = trainer.pairs.dead_letters()
    assert len(dead) == 5 and world.redis.xlen(DEAD_LETTERS) == 5
    reasons = " | ".join(d["reason"] for d in dead)
    assert "schema" in reasons and "chosen" in reasons and "'v7'" in reasons
    assert trainer.store.manifest(1)["pairs"] == 4
    assert world.redis.xpending("csr:pairs", "trainers")["pending"] == 0


def test_pairs_whose_image_cannot_be_trained_on_are_dead_lettered_unread(world):
    """A path that leaves the image root (relative or absolute, even to a real image) and a
    file that is no image: each dead-lettered with its reason, the good pairs trained."""
    trainer = world.trainer()
    world.queue()
    good = world.answer()
    (world.images / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    outside = world.root / "outside.png"
    outside.write_bytes((world.images / "0.png").read_bytes())
    for image in ("../outside.png", str(outside), "corrupt.png"):
        bad = {**json.loads(good[0].to_json()), "image": image, "pair_id": f"bad-{image}"}
        world.redis.xadd("csr:pairs", {"record": json.dumps(bad)})
    assert trainer.run_once(block_ms=1) == "published"
    reasons = [d["reason"] for d in trainer.pairs.dead_letters()]
    assert len(reasons) == 3
    assert sum("leaves the image root" in r for r in reasons) == 2
    assert any("cannot read image" in r and "corrupt.png" in r for r in reasons)
    assert trainer.store.manifest(1)["pairs"] == len(good)


def test_online_schedule_trains_every_n_pairs_and_drops_stale_ones(world):
    online = replace(CONFIG, schedule=ScheduleConfig("online", online_every=2, max_staleness=0))
    trainer = world.trainer(config=online)
    world.queue(count=4)
    world.answer(count=2)
    assert trainer.run_once(block_ms=1) == "published"
    assert trainer.store.versions() == [1] and trainer.iteration == 1
    world.answer(count=2)  # made by "base", now one version behind with max_staleness 0
    assert trainer.run_once(block_ms=1) == "published"  # the iteration closes on version 1
    assert trainer.pairs.stale_count() == 2 and trainer.store.versions() == [1]
    assert trainer.iteration == 2 and trainer.store.version_of_iteration(1) == 1
    [item] = world.prompts.claim("gen", 1, block_ms=1)  # iteration 2: whatever adapter serves
    assert (item.iteration, item.adapter, item.adapter_version) == (2, "", "")
    trainer.store.keep = 1  # the version that closed iteration 1 is pruned...
    trainer.store.publish(
        lambda d: (d / "adapter_model.safetensors").write_bytes(b"x"), 2, "tiny-llava"
    )
    assert trainer.store.versions() == [2]
    assert trainer.iteration == 2 and trainer.store.version_of_iteration(1) == 1  # ...not lost


def test_a_published_adapter_is_loaded_by_a_running_generator_and_changes_its_output(world):
    import time

    from csr.config import SearchConfig
    from csr.search import Prefix, SearchRequest
    from services.runtime.announce import make_announcer
    from services.runtime.vlm import load_rgb

    search = SearchConfig(num_beams=2, num_beam_groups=2, max_new_tokens=4, max_sentences=1)
    request = SearchRequest("probe", "describe .", str(world.images / "0.png"))

    def answers(engine):
        engine.encode_prompt("probe", request.prompt, load_rgb(request.image_ref))
        try:
            return [(c.text, c.token_logprobs) for c in engine.expand([Prefix(request, ())])[0]]
        finally:
            engine.release("probe")

    world.queue()
    world.answer()  # iteration 1's pairs; the generator below has nothing to do until iteration 2
    with running_generator(world, replace(CONFIG, search=search)) as (generator, port):
        before = answers(generator.engine)
        trainer = world.trainer(announce=make_announcer(world.redis, [f"127.0.0.1:{port}"], 30))
        assert trainer.run_once(block_ms=1) == "published"  # returns once the generator serves it
        assert generator.adapter_version == "1"
        deadline = time.monotonic() + 60
        while world.prompts.iteration_progress(2) != (4, 4):  # iteration 2, queued by the trainer
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert answers(generator.engine) != before
    iteration_two = [r for r in world.prompts.pairs() if r.iteration == 2]
    assert iteration_two and {r.adapter_version for r in iteration_two} == {"1"}


def test_a_trainer_killed_mid_update_resumes_from_its_checkpoint(world, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from services.trainer.observe import PrometheusCallback

    config = replace(CONFIG, dpo=replace(CONFIG.dpo, epochs=2))  # 4 pairs, batch 2: 4 steps
    steps: list[int] = []
    real = PrometheusCallback.on_step_end

    def counting(self, args, state, control, **kwargs):
        steps.append(state.global_step)
        if state.global_step == 3 and len(steps) == 3:
            raise KeyboardInterrupt("killed at step 3")  # checkpoint-2 is on disk
        return real(self, args, state, control, **kwargs)

    monkeypatch.setattr(PrometheusCallback, "on_step_end", counting)
    world.queue()
    world.answer()
    with pytest.raises(KeyboardInterrupt):
        world.trainer(config=config, checkpoint_steps=1).run_once(block_ms=1)
    assert (world.root / "work" / "update-1" / "checkpoint-2").is_dir()
    resumed = world.trainer(config=config, checkpoint_steps=1)
    assert resumed.run_once(block_ms=1) == "published"
    assert steps == [1, 2, 3, 3, 4]  # after the restart only steps 3 and 4 ran
    assert not (world.root / "work" / "update-1").exists()  # checkpoints go once published
    # The same adapter as an uninterrupted run of the same update.
    other = make_world(tmp_path / "other")
    try:
        other.queue()
        other.answer()
        monkeypatch.setattr(PrometheusCallback, "on_step_end", real)
        straight = other.trainer(config=config)
        assert straight.run_once(block_ms=1) == "published"
        a = load_file(str(resumed.store.path(1) / "adapter_model.safetensors"))
        b = load_file(str(straight.store.path(1) / "adapter_model.safetensors"))
        assert a.keys() == b.keys()
        for name in a:
            assert torch.allclose(a[name], b[name], atol=1e-6), name
    finally:
        embedded_redis.stop(other.redis)


def test_a_stop_request_mid_update_checkpoints_publishes_nothing_and_resumes(world, monkeypatch):
    import threading

    from services.trainer.dpo import UpdateInterrupted
    from services.trainer.observe import PrometheusCallback

    config = replace(CONFIG, dpo=replace(CONFIG.dpo, epochs=2))  # 4 pairs, batch 2: 4 steps
    stop, steps = threading.Event(), []
    real = PrometheusCallback.on_step_end

    def sigterm_at_step_2(self, args, state, control, **kwargs):
        steps.append(state.global_step)
        if state.global_step == 2:
            stop.set()  # what SIGTERM does in `csr train`
        return real(self, args, state, control, **kwargs)

    monkeypatch.setattr(PrometheusCallback, "on_step_end", sigterm_at_step_2)
    world.queue()
    world.answer()
    with pytest.raises(UpdateInterrupted, match="step 2 of 4"):
        world.trainer(config=config, stop=stop).run_once(block_ms=1)  # no checkpoint_steps
    assert (world.root / "work" / "update-1" / "checkpoint-2").is_dir()
    assert world.redis.xpending("csr:pairs", "trainers")["pending"] == 4
    resumed = world.trainer(config=config)
    assert resumed.store.versions() == []
    assert resumed.run_once(block_ms=1) == "published"
    assert steps == [1, 2, 3, 4] and resumed.store.manifest(1)["steps"] == 4


def test_one_base_model_serves_every_update_as_a_fresh_process_would(world, tmp_path):
    from safetensors.torch import load_file

    from services.runtime.vlm import load_rgb
    from services.trainer.dpo import save_adapter

    loaded = []
    trainer = world.trainer(load_base=lambda: loaded.append(base_model()) or loaded[-1])
    world.queue()
    run_iteration(trainer, world, 1)
    records = {r.pair_id: r for r in world.answer()}  # iteration 2, on adapter 1
    assert trainer.run_once(block_ms=1) == "published" and trainer.store.versions() == [1, 2]
    assert len(loaded) == 1 and trainer.base.model is loaded[0]  # loaded once, for both
    base = loaded[0]
    assert "forward" not in base.__dict__  # TRL's patch is off again...
    assert not any("lora" in name for name, _ in base.named_modules())  # ...and every LoRA layer
    untouched = base_model().state_dict()
    assert all(torch.equal(w, untouched[n]) for n, w in base.state_dict().items())
    # Update 2 as a fresh process makes it: a new base, adapter 1, the same pairs and seed.
    batch = [records[i] for i in trainer.store.manifest(2)["pair_ids"]]
    eos = trainer.processor.tokenizer.eos_token
    fresh = train_update(
        base_model(),
        trainer.processor,
        trainer.store.path(1),
        [dpo_example(r, eos, trainer.lead) for r in batch],
        lambda p: load_rgb(str(world.images / p)),
        CONFIG.dpo,
        tmp_path / "fresh",
        seed=CONFIG.dpo.seed + 2,
    )
    save_adapter(fresh.model, tmp_path / "fresh-adapter")
    reused = load_file(str(trainer.store.path(2) / "adapter_model.safetensors"))
    alone = load_file(str(tmp_path / "fresh-adapter" / "adapter_model.safetensors"))
    assert reused.keys() == alone.keys() and reused
    for name in reused:
        assert torch.allclose(reused[name], alone[name], atol=1e-6), name
    first = load_file(str(trainer.store.path(1) / "adapter_model.safetensors"))
    assert any(not torch.equal(reused[n], first[n]) for n in reused)  # update 2 did train


def test_the_dataset_holds_image_paths_read_at_collate_time(world):
    from services.runtime.vlm import load_rgb
    from services.trainer.dpo import LazyImages, build_dataset

    world.queue()
    records = world.answer()
    processor = world.trainer().processor
    examples = [dpo_example(r, "</s>", " ") for r in records]
    dataset = build_dataset(examples, processor)
    assert dataset.features["images"].feature.dtype == "string"  # paths, no image bytes
    assert dataset[0]["images"] == [records[0].image]
    read = []

    def load(path):
        read.append(path)
        return load_rgb(str(world.images / path))

    batch = LazyImages(processor, load)([dataset[0], dataset[1]])
    assert read == [records[0].image, records[1].image]
    expected = processor.image_processor(
        images=[load_rgb(str(world.images / r.image)) for r in records[:2]] * 2,
        return_tensors="pt",
    )["pixel_values"]
    assert torch.equal(batch["pixel_values"], expected)  # chosen and rejected rows: each image


def test_the_same_pairs_and_seed_train_the_same_adapter(world, tmp_path):
    world.queue()
    examples = [dpo_example(r, "</s>", " ") for r in world.answer()]
    processor = world.trainer().processor

    def update(out: str):
        base = base_model()
        torch.manual_seed(len(out))  # whatever ran before: the update seeds what it draws
        model = train_update(
            base,
            processor,
            None,
            examples,
            lambda p: __import__("PIL.Image").Image.open(world.images / p),
            CONFIG.dpo,
            tmp_path / out,
            seed=5,
        ).model
        return {n: p.detach().clone() for n, p in model.named_parameters() if ".lora_" in n}

    first, second = update("a"), update("bb")
    assert first.keys() == second.keys() and first
    assert all(torch.equal(first[n], second[n]) for n in first)
