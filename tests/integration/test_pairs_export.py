"""`csr pairs export` on finished runs in an embedded Redis: TRL's columns with provenance, the
no-pairs apart, the filters, the bad inputs (nothing written), and a TRL DPOTrainer step on an
export as it was written."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from csr_cli.main import app
from tests.integration.pairs_runs import append_raw, small_records, write_run

runner = CliRunner()
IMAGES = [f"scene-{i}.png" for i in range(5)]


@pytest.fixture
def run(tmp_path):
    return write_run(
        tmp_path / "runs",
        small_records(IMAGES),
        no_pairs={1: {"tied_rewards": 2}, 2: {"single_response": 1}},
        failed={2: 1},
    )


def export(*args: str):
    result = runner.invoke(app, ["pairs", "export", *args], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_the_export_holds_trls_columns_every_pair_and_its_provenance(run, tmp_path):
    import datasets

    before = run.digest()
    code, output = export(str(run.run_dir), "--out", str(tmp_path / "out"))
    assert code == 0, output
    assert "7 pairs (conversational format), 4 prompts without a pair" in output
    assert run.digest() == before  # the run's files are untouched
    dataset = datasets.load_from_disk(str(tmp_path / "out"))
    parquet = datasets.load_dataset(
        "parquet", data_files=str(tmp_path / "out" / "pairs.parquet"), split="train"
    )
    assert len(dataset) == len(parquet) == 7
    assert list(dataset.features)[:4] == ["images", "prompt", "chosen", "rejected"]
    for rows in (dataset, parquet):
        for row, record in zip(rows, run.records):
            assert row["prompt"] == [{"role": "user", "content": "describe ."}]
            assert row["chosen"] == [{"role": "assistant", "content": record.chosen}]
            assert row["rejected"] == [{"role": "assistant", "content": record.rejected}]
            [image] = row["images"]
            with Image.open(run.images / record.image) as original:
                assert image.size == original.size
                assert image.convert("RGB").tobytes() == original.convert("RGB").tobytes()
            assert (row["pair_id"], row["iteration"], row["adapter_version"]) == (
                record.pair_id,
                record.iteration,
                record.adapter_version,
            )
            assert row["chosen_r_i"] == [s.r_i for s in record.chosen_sentences]
            assert row["rejected_r_t"] == [s.r_t for s in record.rejected_sentences]
            assert row["rejected_r"] == [s.r for s in record.rejected_sentences]
            assert row["margin"] == pytest.approx(record.chosen_reward - record.rejected_reward)
    first = dataset[0]  # worked out by hand: R = 0.9 R_I + 0.1 R_T, path mean
    assert first["chosen_r"] == pytest.approx([0.9 * 47.3 + 0.1 * 0.314, 0.9 * 35.0 + 0.1 * 0.93])
    assert first["chosen_sentences"] == ["There is a circle.", ""]  # the scored end, kept
    no_pairs = json.loads((tmp_path / "out" / "no_pairs.json").read_text())
    assert no_pairs["by_iteration"] == {
        "1": {"tied_rewards": 2},
        "2": {"failed": 1, "single_response": 1},
    }
    assert [f["prompt_id"] for f in no_pairs["failed"]] == ["failed-0"]


def test_the_filters_keep_an_iteration_or_an_adapter_version(run, tmp_path):
    import datasets

    code, output = export(str(run.run_dir), "--out", str(tmp_path / "it2"), "--iteration", "2")
    assert code == 0, output
    kept = datasets.load_from_disk(str(tmp_path / "it2"))
    assert kept["prompt_id"] == ["p4", "p5", "p6"] and set(kept["iteration"]) == {2}
    no_pairs = json.loads((tmp_path / "it2" / "no_pairs.json").read_text())
    assert no_pairs["by_iteration"] == {"2": {"failed": 1, "single_response": 1}}
    code, output = export(
        str(run.run_dir), "--out", str(tmp_path / "v"), "--adapter-version", "base"
    )
    assert code == 0, output
    assert datasets.load_from_disk(str(tmp_path / "v"))["prompt_id"] == ["p0", "p1", "p2", "p3"]
    # a second export to the same folder replaces the first, whole
    code, output = export(str(run.run_dir), "--out", str(tmp_path / "v"), "--iteration", "2")
    assert code == 0, output
    assert datasets.load_from_disk(str(tmp_path / "v"))["prompt_id"] == ["p4", "p5", "p6"]


def _nothing_written(parent, name: str) -> bool:
    return not (parent / name).exists() and not [p for p in parent.iterdir() if name in p.name]


def test_a_folder_without_run_data_is_refused_by_name(tmp_path):
    empty = tmp_path / "not-a-run"
    (empty / "run").mkdir(parents=True)
    (empty / "run" / "redis.db").write_bytes(b"")
    code, output = export(str(empty), "--out", str(tmp_path / "out"))
    assert code == 1
    assert f"{empty} holds no run data (redis.db or redis.db.aof)" in output
    assert f"its run folder is {empty / 'run'}" in output
    assert _nothing_written(tmp_path, "out")


def test_an_unknown_iteration_is_refused_and_nothing_is_written(run, tmp_path):
    code, output = export(str(run.run_dir), "--out", str(tmp_path / "out"), "--iteration", "5")
    assert code == 1
    assert "iteration 5 is not in this run; it has 1, 2" in output
    assert _nothing_written(tmp_path, "out")


def test_an_iteration_of_no_pairs_only_is_refused_with_what_its_prompts_gave(tmp_path):
    run = write_run(
        tmp_path / "runs",
        small_records(IMAGES),
        no_pairs={1: {"tied_rewards": 1}, 3: {"tied_rewards": 2, "single_response": 1}},
    )
    code, output = export(str(run.run_dir), "--out", str(tmp_path / "out"), "--iteration", "3")
    assert code == 1
    assert "matches --iteration 3: nothing to export (3 prompts gave no pair: " in output
    assert "single_response: 1, tied_rewards: 2;" in output  # iteration 1's is not counted
    assert _nothing_written(tmp_path, "out")


def test_a_record_of_an_unknown_schema_version_is_refused_and_nothing_is_written(run, tmp_path):
    future = {**run.records[0].to_dict(), "schema_version": 99, "pair_id": "from-the-future"}
    append_raw(run, future)
    code, output = export(str(run.run_dir), "--out", str(tmp_path / "out"))
    assert code == 1
    assert "csr:pairs entry" in output and "schema_version 99 is not supported" in output
    assert _nothing_written(tmp_path, "out")


def test_a_record_nested_too_deep_is_refused_by_name_and_nothing_is_written(run, tmp_path):
    append_raw(run, "[" * 100_000 + "]" * 100_000)
    for command in ("export", "report"):
        result = runner.invoke(
            app, ["pairs", command, str(run.run_dir), "--out", str(tmp_path / command)]
        )
        assert result.exit_code == 1, result.output
        assert "csr:pairs entry" in result.output and "nests deeper" in result.output
        assert _nothing_written(tmp_path, command)


def test_a_folder_that_is_no_export_is_never_replaced(run, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("mine")
    code, output = export(str(run.run_dir), "--out", str(precious))
    assert code == 1 and "is not a csr pairs export" in output
    assert [p.name for p in precious.iterdir()] == ["notes.txt"]


@pytest.mark.slow
@pytest.mark.parametrize("form", ["conversational", "standard"])
def test_trls_dpo_trainer_trains_a_step_on_the_export_as_written(run, tmp_path, form):
    import datasets
    import torch
    from peft import LoraConfig, get_peft_model
    from trl import DPOConfig, DPOTrainer

    from csr.config import LANGUAGE_MODEL_LINEAR_LAYERS
    from tests.models.llava import build_tiny_llava

    model, processor = build_tiny_llava(tmp_path / "tiny-llava", seed=2)
    extra = ["--model", str(tmp_path / "tiny-llava")] if form == "standard" else []
    code, output = export(str(run.run_dir), "--out", str(tmp_path / "out"), *extra)
    assert code == 0, output
    dataset = datasets.load_from_disk(str(tmp_path / "out"))
    if form == "standard":  # exactly what csr train renders: the chat template, the EOS token
        bos, eos = processor.tokenizer.bos_token, processor.tokenizer.eos_token
        assert dataset[0]["prompt"] == f"{bos}USER: <image>\ndescribe . ASSISTANT:"
        assert dataset[0]["chosen"] == f" There is a circle.{eos}"
    else:  # TRL applies the model's template; this one must render the assistant's turn
        processor.chat_template = (
            "{% for m in messages %}{% if m['role'] == 'user' %}USER: {% for c in m['content'] %}"
            "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}"
            "{% endfor %} {% else %}ASSISTANT: {{ m['content'][0]['text'] }}</s>{% endif %}"
            "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
        )
    torch.manual_seed(0)
    policy = get_peft_model(
        model.train(),
        LoraConfig(
            r=4, lora_alpha=8, lora_dropout=0.0, target_modules=LANGUAGE_MODEL_LINEAR_LAYERS
        ),
    )
    args = DPOConfig(
        output_dir=str(tmp_path / "dpo"),
        max_steps=1,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        max_length=None,
        logging_steps=1,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = DPOTrainer(model=policy, args=args, processing_class=processor, train_dataset=dataset)
    trainer.train()
    assert trainer.state.global_step == 1
    lora_b = [p for n, p in policy.named_parameters() if "lora_B" in n and ".default." in n]
    assert lora_b and all(p.abs().max() > 0 for p in lora_b)  # B starts at 0: the step moved it
    logged = trainer.state.log_history[0]
    assert logged["logps/chosen"] < 0 and logged["logps/rejected"] < 0  # non-empty completions


def test_a_live_redis_url_is_read_without_a_write(run, tmp_path):
    import datasets

    from services.runtime import embedded_redis

    server = embedded_redis.start(run.run_dir / "redis.db")
    try:
        keys = {k: server.type(k) for k in server.keys("*")}
        lengths = {k: server.xlen(k) for k, kind in keys.items() if kind == b"stream"}
        groups = {k: server.xinfo_groups(k) for k in lengths}
        url = f"unix://{server.socket_file}"
        code, output = export(url, "--out", str(tmp_path / "out"))
        assert code == 1  # a URL names no image root
        assert "image 'scene-0.png' of pair" in output and "give --image-root" in output
        code, output = export(url, "--out", str(tmp_path / "out"), "--image-root", str(run.images))
        assert code == 0, output
        assert {k: server.type(k) for k in server.keys("*")} == keys
        assert {k: server.xlen(k) for k in lengths} == lengths
        assert {k: server.xinfo_groups(k) for k in lengths} == groups
    finally:
        embedded_redis.stop(server)
    assert datasets.load_from_disk(str(tmp_path / "out"))["pair_id"] == [
        r.pair_id for r in run.records
    ]
