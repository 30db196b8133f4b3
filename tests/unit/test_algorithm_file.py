"""The algorithm settings file of the services, its generated reference, and algorithm
settings given where only deployment belongs."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from csr.config import CSRConfig
from services.runtime.algorithm import load_algorithm
from services.runtime.docs import algorithm_fields, algorithm_markdown, algorithm_yaml
from services.runtime.entry import unknown_settings
from services.trainer.settings import TrainerSettings

ROOT = Path(__file__).parents[2]


def test_a_file_sets_the_algorithm(tmp_path):
    path = tmp_path / "algorithm.yaml"
    path.write_text("search:\n  expansion: beam\ndpo:\n  learning_rate: 0.0005\n  epochs: 2\n")
    config = load_algorithm(str(path))
    assert config.search.expansion == "beam"
    assert (config.dpo.learning_rate, config.dpo.epochs) == (5e-4, 2)
    assert config.dpo.beta == CSRConfig().dpo.beta  # omitted keys keep their defaults


def test_a_bad_file_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("search:\n  num_beams: 0\n")
    with pytest.raises(RuntimeError, match="bad.yaml.*num_beams"):
        load_algorithm(str(path))
    with pytest.raises(RuntimeError, match="cannot read"):
        load_algorithm(str(tmp_path / "missing.yaml"))
    path.write_text("dpo:\n  learning_rate: 1e-7\n")  # YAML 1.1 reads this as text
    with pytest.raises(RuntimeError, match="write 1.0e-7"):
        load_algorithm(str(path))


def test_a_deeply_nested_file_is_named_not_a_traceback(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("search: " + "[" * 10_000 + "]" * 10_000 + "\n")
    with pytest.raises(RuntimeError, match="deep.yaml.*nested too deeply"):
        load_algorithm(str(path))


def test_every_algorithm_field_has_help_and_appears_once_in_the_reference():
    names = [name for name, _, _ in algorithm_fields()]
    assert (
        len(names)
        == len(set(names))
        == sum(
            len(dataclasses.fields(section))
            for section in (
                CSRConfig().search,
                CSRConfig().reward,
                CSRConfig().selection,
                CSRConfig().dpo,
                CSRConfig().schedule,
            )
        )
        + 1
    )  # + iterations
    assert all(help_text.strip() for _, _, help_text in algorithm_fields())
    table = algorithm_markdown()
    for name in names:
        assert table.count(f"| `{name}` |") == 1


def test_the_yaml_reference_reads_back_to_the_defaults_and_is_current():
    assert CSRConfig.from_dict(yaml.safe_load(algorithm_yaml())) == CSRConfig()
    assert (ROOT / "examples" / "algorithm-reference.yaml").read_text() == algorithm_yaml()


def test_the_readme_table_is_current():
    assert algorithm_markdown() in (ROOT / "README.md").read_text()


def test_deployment_settings_carry_no_algorithm_setting():
    from services.generator.settings import GeneratorSettings

    algorithm_names = {name.rpartition(".")[2] for name, _, _ in algorithm_fields()}
    assert not algorithm_names & set(TrainerSettings.model_fields) - {"algorithm"}
    # a generator's batch is how many prompts it searches together: deployment, not dpo's
    assert not algorithm_names & set(GeneratorSettings.model_fields) - {"algorithm", "batch_size"}


def test_a_name_two_sections_share_is_pointed_to_both():
    from services.generator.settings import GeneratorSettings

    message = unknown_settings(GeneratorSettings, ["CSR_GENERATOR_SEED"])
    assert "CSR_GENERATOR_SEED is the algorithm setting search.seed or dpo.seed" in message


def test_an_algorithm_setting_given_as_a_variable_is_pointed_to_the_file():
    message = unknown_settings(
        TrainerSettings,
        ["CSR_TRAINER_LEARNING_RATE", "CSR_TRAINER_MODEL", "CSR_TRAINER_MODLE", "CSR_REWARD_MODEL"],
    )
    assert "['CSR_TRAINER_LEARNING_RATE', 'CSR_TRAINER_MODLE']" in message
    assert "CSR_TRAINER_LEARNING_RATE is the algorithm setting dpo.learning_rate" in message
    assert "CSR_TRAINER_ALGORITHM" in message
    assert unknown_settings(TrainerSettings, ["CSR_TRAINER_MODEL", "PATH"]) == ""
