"""The `csr up` file: one algorithm for the whole run, deployment settings per service."""

from pathlib import Path

import pytest
import yaml

from csr.config import CSRConfig
from services.stack.config import StackConfigError, check_settings, load_stack_config


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "csr.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_an_inline_algorithm_reaches_the_generator_and_the_trainer_alike(tmp_path):
    config = load_stack_config(
        write(
            tmp_path,
            {
                "algorithm": {"iterations": 2, "dpo": {"learning_rate": 5e-4}},
                "trainer": {"settings": {"MODEL": "m"}},
            },
        )
    )
    config.write_algorithm()
    written = yaml.safe_load(config.algorithm_file.read_text())
    assert CSRConfig.from_dict(written).iterations == 2
    for service, prefix in (("generator", "CSR_GENERATOR_"), ("trainer", "CSR_TRAINER_")):
        assert config.env(service, {})[prefix + "ALGORITHM"] == str(config.algorithm_file)
    assert "CSR_REWARD_ALGORITHM" not in config.env("reward", {})
    assert config.env("trainer", {})["CSR_TRAINER_MODEL"] == "m"


def test_an_algorithm_file_is_read_relative_to_the_csr_up_file(tmp_path):
    (tmp_path / "algo.yaml").write_text("search:\n  num_beams: 10\n")
    config = load_stack_config(write(tmp_path, {"algorithm": "algo.yaml"}))
    assert config.algorithm == {"search": {"num_beams": 10}}


def test_without_an_algorithm_each_service_keeps_its_own(tmp_path):
    config = load_stack_config(write(tmp_path, {"trainer": {"settings": {"ALGORITHM": "a.yaml"}}}))
    assert config.algorithm is None
    assert config.env("trainer", {})["CSR_TRAINER_ALGORITHM"] == "a.yaml"
    config.write_algorithm()
    assert not config.algorithm_file.exists()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"algorithm": {"search": {"num_beams": 0}}}, "num_beams=0"),
        ({"algorithm": {"serch": {}}}, "unknown algorithm config keys"),
        ({"algorithm": 3}, "algorithm must be a mapping"),
        ({"algorithm": "missing.yaml"}, "cannot read the algorithm file"),
        ({"algorithm": {}, "trainer": {"settings": {"ALGORITHM": "a.yaml"}}}, "keep one of them"),
        ({"algorithms": {}}, "unknown sections"),
    ],
)
def test_a_bad_algorithm_section_is_refused_before_anything_starts(tmp_path, data, message):
    with pytest.raises(StackConfigError, match=message):
        load_stack_config(write(tmp_path, data))


def test_an_algorithm_setting_among_a_services_settings_is_pointed_to_the_file():
    with pytest.raises(StackConfigError, match="dpo.learning_rate"):
        check_settings("trainer", {"CSR_TRAINER_LEARNING_RATE": "5e-4"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("reward: 5", "reward must be a mapping of settings, workers"),
        ("generator: [1]", "generator must be a mapping of replicas, settings"),
        ("reward: {workers: 2, setings: {}}", "reward has unknown keys \\['setings'\\]"),
        ("trainer: {replicas: 2}", "trainer has unknown keys \\['replicas'\\]"),
        ("run_dir: [1]", "run_dir must be a directory path"),
        ("run_dir: null", "run_dir must be a directory path"),
        ("reward: {settings: {MODEL: [1, 2]}}", "reward.settings.MODEL = list: a setting is"),
        ("reward: {settings: {MODEL: null}}", "reward.settings.MODEL is empty"),
        ("[" * 10_000 + "]" * 10_000, "nested too deeply"),
    ],
)
def test_a_malformed_csr_up_file_is_refused_by_name(tmp_path, text, message):
    path = tmp_path / "csr.yaml"
    path.write_text(text)
    with pytest.raises(StackConfigError, match=message):
        load_stack_config(path)


def test_an_alias_bomb_is_refused_before_it_is_expanded(tmp_path):
    levels = "".join(
        f"      - &l{n} [{', '.join([f'*l{n - 1}'] * 10)}]\n" for n in range(1, 9)
    )  # 10**8 values once expanded, 80 aliases as written
    path = tmp_path / "csr.yaml"
    path.write_text(f"algorithm:\n  search:\n    max_sentences:\n      - &l0 x\n{levels}")
    with pytest.raises(StackConfigError, match="aliases"):
        load_stack_config(path)


def test_csr_up_gives_the_generators_and_the_trainer_one_new_admin_token_per_run(tmp_path):
    from services.stack.up import plan

    config = load_stack_config(write(tmp_path, {"generator": {"replicas": 2}}))
    first, second = plan(config, {}, "unix:///r.sock"), plan(config, {}, "unix:///r.sock")
    tokens = {
        s.env.get("CSR_GENERATOR_ADMIN_TOKEN") or s.env.get("CSR_TRAINER_GENERATOR_ADMIN_TOKEN")
        for s in first
        if not s.name.startswith("reward")
    }
    [token] = tokens
    assert len(token) >= 32
    assert token not in {s.env.get("CSR_TRAINER_GENERATOR_ADMIN_TOKEN") for s in second}
    with pytest.raises(StackConfigError, match="ADMIN_TOKEN"):
        load_stack_config(write(tmp_path, {"generator": {"settings": {"ADMIN_TOKEN": "mine"}}}))
