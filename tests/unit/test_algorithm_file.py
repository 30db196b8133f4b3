"""Algorithm settings files for the services, and the trainer's explicit overrides on top."""

import pytest

from services.runtime.algorithm import load_algorithm
from services.trainer.main import config_from
from services.trainer.settings import TrainerSettings


def test_a_file_sets_the_algorithm_and_explicit_trainer_settings_win(tmp_path, monkeypatch):
    path = tmp_path / "algorithm.yaml"
    path.write_text("search:\n  expansion: beam\ndpo:\n  learning_rate: 0.0005\n  epochs: 2\n")
    assert load_algorithm(str(path)).search.expansion == "beam"
    for key in [k for k in __import__("os").environ if k.startswith("CSR_TRAINER_")]:
        monkeypatch.delenv(key)
    from_file = config_from(TrainerSettings(algorithm=str(path)))
    assert (from_file.dpo.learning_rate, from_file.dpo.epochs) == (5e-4, 2)  # not the 1e-7
    monkeypatch.setenv("CSR_TRAINER_EPOCHS", "3")
    both = config_from(TrainerSettings(algorithm=str(path)))
    assert (both.dpo.learning_rate, both.dpo.epochs) == (5e-4, 3)


def test_a_bad_file_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("search:\n  num_beams: 0\n")
    with pytest.raises(RuntimeError, match="bad.yaml.*num_beams"):
        load_algorithm(str(path))
    with pytest.raises(RuntimeError, match="cannot read"):
        load_algorithm(str(tmp_path / "missing.yaml"))
