"""The README's configuration reference is the one the code generates."""

import importlib
import re
from pathlib import Path

from services.reward.settings import RewardSettings
from services.runtime.docs import settings_markdown

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text()


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


# A backticked name in the README that starts like the project's packages or folders.
_PROJECT_NAME = re.compile(
    r"`((?:csr|csr_cli|csr_api|services|toyworld|evaluation|reports|tests|bench|examples|docker|"
    r"deploy|docs|proto)(?:[./][\w.-]+)+/?)`"
)


def _resolves(name: str) -> bool:
    """A path in the repository, or a dotted module path whose last parts may be attributes."""
    if "/" in name or name.endswith((".py", ".yaml", ".yml", ".jsonl", ".proto", ".md")):
        return (ROOT / name).exists()
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            if not hasattr(target, attribute):
                return False
            target = getattr(target, attribute)
        return True
    return False


def test_every_module_path_and_file_the_readme_names_exists():
    named = sorted(set(_PROJECT_NAME.findall(README)))
    assert len(named) > 20  # the pattern still finds the README's references
    assert [name for name in named if not _resolves(name)] == []


def test_the_reference_check_catches_what_is_gone():
    assert not _resolves("csr.rewards.no_such_formula")
    assert not _resolves("services/no_such_service/")
    assert _resolves("csr.rewards.calibrated_reward") and _resolves("services/reward/")
