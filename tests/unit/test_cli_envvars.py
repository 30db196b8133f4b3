"""A CLI option read from a service's environment prefix must be one of that service's
settings: `run_service` refuses unknown CSR_<SERVICE>_* variables, so an option variable with
that prefix would stop the service from starting once a user exports it."""

import typer.main

from csr_cli.main import app
from services.generator.settings import GeneratorSettings
from services.reward.settings import RewardSettings
from services.runtime.entry import unknown_settings
from services.trainer.settings import TrainerSettings


def _option_envvars(command) -> set[str]:
    names = set()
    for param in getattr(command, "params", []):
        envvar = getattr(param, "envvar", None)
        names.update([envvar] if isinstance(envvar, str) else envvar or [])
    for sub in getattr(command, "commands", {}).values():
        names |= _option_envvars(sub)
    return names


def test_cli_option_variables_do_not_collide_with_service_settings():
    names = _option_envvars(typer.main.get_command(app))
    assert "CSR_REWARD_TOKEN" in names  # the walk finds the options' variables
    for settings in (RewardSettings, GeneratorSettings, TrainerSettings):
        assert unknown_settings(settings, names) == ""


def test_the_check_catches_a_colliding_name():
    assert "CSR_REWARD_TARGET" in unknown_settings(RewardSettings, ["CSR_REWARD_TARGET"])
