"""The generated references, regenerated in place: `python -m csr_cli.docs README.md` rewrites
the README's settings tables (each service's and the algorithm's) and
examples/algorithm-reference.yaml beside it."""

from __future__ import annotations

import sys
from pathlib import Path

from services.runtime.docs import algorithm_yaml, replace_algorithm_table, replace_table


def main(argv: list[str] | None = None) -> None:
    """python -m csr_cli.docs README.md: regenerate every generated reference."""
    from services.generator.settings import GeneratorSettings
    from services.reward.settings import RewardSettings
    from services.trainer.settings import TrainerSettings

    path = Path((argv if argv is not None else sys.argv[1:])[0])
    text = path.read_text()
    for settings_class in (RewardSettings, GeneratorSettings, TrainerSettings):
        text = replace_table(text, settings_class)
    path.write_text(replace_algorithm_table(text))
    (path.parent / "examples" / "algorithm-reference.yaml").write_text(algorithm_yaml())


if __name__ == "__main__":
    main()
