"""`csr demo`: the core on a fake captioner picks the caption without hallucinations."""

from typer.testing import CliRunner

from csr_cli.main import app

runner = CliRunner()


def test_demo_chooses_the_faithful_caption_and_rejects_a_hallucinated_one():
    result = runner.invoke(app, ["demo", "--present", "circle,triangle"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    chosen = next(line for line in result.output.splitlines() if line.startswith("chosen"))
    rejected = next(line for line in result.output.splitlines() if line.startswith("rejected"))
    assert "circle" in chosen and "triangle" in chosen
    assert not any(absent in chosen for absent in ("square", "cross", "diamond", "ring"))
    assert any(absent in rejected for absent in ("square", "cross", "diamond", "ring"))


def test_demo_refuses_unknown_objects_and_modes():
    result = runner.invoke(app, ["demo", "--present", "circle,unicorn"])
    assert result.exit_code != 0 and "unicorn" in result.output
    result = runner.invoke(app, ["demo", "--mode", "greedy"])
    assert result.exit_code != 0 and "greedy" in result.output
    result = runner.invoke(app, ["demo", "--lam", "2"])
    assert result.exit_code != 0 and "lam=2.0" in result.output
