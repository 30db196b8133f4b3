"""The README's configuration reference is the one the code generates."""

from pathlib import Path

from services.reward.settings import RewardSettings
from services.runtime.docs import settings_markdown

README = (Path(__file__).parents[2] / "README.md").read_text()


def test_reward_settings_table_is_current():
    assert settings_markdown(RewardSettings) in README


def test_generator_settings_table_is_current():
    from services.generator.settings import GeneratorSettings

    assert settings_markdown(GeneratorSettings) in README


def test_trainer_settings_table_is_current():
    from services.trainer.settings import TrainerSettings

    assert settings_markdown(TrainerSettings) in README


def test_readme_shows_the_two_commands():
    assert "make demo" in README and "make test" in README
