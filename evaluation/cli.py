"""`csr chair` and `csr pope`: hallucination metrics on the user's COCO and POPE files.

Each command scores answers already written (a captions or answers file), or first writes
them with a model directory and optional adapter version, greedily. Options in, a table and
JSON out; the formats are evaluation.coco_files'.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from csr.evaluation.chair_text import TextRules

Model = Annotated[
    Path | None,
    typer.Option(help="VLM directory to write the answers with (instead of an answers file)."),
]
Adapter = Annotated[Path | None, typer.Option(help="Adapter version directory for --model.")]
Images = Annotated[
    Path | None, typer.Option(help="Directory of the images (with --model), e.g. COCO val2014.")
]
JsonOut = Annotated[Path | None, typer.Option("--json", help="Write the results here.")]


def _fail(error: Exception) -> None:
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(2) from error


class _Answerer:
    """A model loaded once, answering (image file, prompt) pairs greedily; each image file is
    read once however many questions ask about it."""

    def __init__(self, model: Path, adapter: Path | None, images: Path | None):
        from evaluation.coco_files import EvalFileError
        from evaluation.generate import load_model

        if images is None:
            raise EvalFileError("--model needs --images, the directory the images are in")
        self.images, self.loaded = images, {}
        self.vlm, self.processor = load_model(model, adapter)

    def _image(self, name: str):
        from PIL import Image

        from evaluation.coco_files import EvalFileError

        if name not in self.loaded:
            try:
                with Image.open(self.images / name) as image:
                    self.loaded[name] = image.convert("RGB")
            except OSError as e:
                raise EvalFileError(f"cannot read image {self.images / name}: {e}") from e
        return self.loaded[name]

    def __call__(self, files: list[str], prompts: list[str], max_new_tokens: int) -> list[str]:
        from evaluation.generate import answers

        return answers(
            self.vlm,
            self.processor,
            [self._image(f) for f in files],
            prompts,
            max_new_tokens=max_new_tokens,
            batch=8,
        )


def chair_command(
    instances: Annotated[Path, typer.Option(help="COCO instances file (instances_val2014.json).")],
    references: Annotated[
        Path | None,
        typer.Option(
            help="COCO captions file "
            "(captions_val2014.json): objects its "
            "captions name count as true too."
        ),
    ] = None,
    captions: Annotated[
        Path | None,
        typer.Option(help="Generated captions (JSON list or JSONL of image_id, caption)."),
    ] = None,
    model: Model = None,
    adapter: Adapter = None,
    images: Images = None,
    count: Annotated[int, typer.Option(help="With --model: the first N images by id.")] = 500,
    prompt: Annotated[
        str, typer.Option(help="With --model: the description prompt.")
    ] = "Please describe this image in detail.",
    max_new_tokens: Annotated[int, typer.Option(help="With --model: tokens per caption.")] = 512,
    text_rules: Annotated[
        TextRules,
        typer.Option(
            help="How captions are read: 'original' reproduces the original CHAIR code (Treebank "
            "words, Pattern's singulars, the synonym list as published), so the numbers "
            "compare with tables made with it; 'cleaned' splits hyphens and slashes, folds "
            "plurals correctly and uses the cleaned synonym list."
        ),
    ] = TextRules.ORIGINAL,
    json_out: JsonOut = None,
) -> None:
    """CHAIR_s, CHAIR_i and recall of captions on COCO, with the standard synonym list."""
    from csr.evaluation.coco import coco_chair
    from evaluation.coco_files import EvalFileError, image_files, load_truth, read_captions

    try:
        if (captions is None) == (model is None):
            raise EvalFileError(
                "give either --captions (a file of generated captions) or "
                "--model (to write them now)"
            )
        if captions is not None:
            pairs = read_captions(captions)
        else:
            files = image_files(instances)
            ids = sorted(files)[:count]
            texts = _Answerer(model, adapter, images)(
                [files[i] for i in ids], [prompt] * len(ids), max_new_tokens
            )
            pairs = list(zip(ids, texts))
        truth = load_truth(instances, references, {i for i, _ in pairs}, text_rules)
        result = coco_chair(pairs, truth, text_rules)
    except (EvalFileError, ValueError) as e:
        _fail(e)
    _print_chair(result)
    if json_out is not None:
        json_out.write_text(json.dumps(_chair_json(result, pairs), indent=2))


def _print_chair(result) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("captions", "CHAIR_s", "CHAIR_i", "recall", "words", "text rules")
    table.add_row(
        str(result.captions),
        f"{result.chair_s:.3f}",
        f"{result.chair_i:.3f}",
        f"{result.recall:.3f}",
        f"{result.mean_words:.1f}",
        result.text_rules.value,
    )
    Console().print(table)


def _chair_json(result, pairs: list[tuple[int, str]]) -> dict:
    return {
        "chair_s": result.chair_s,
        "chair_i": result.chair_i,
        "recall": result.recall,
        "mean_words": result.mean_words,
        "captions": result.captions,
        "text_rules": result.text_rules.value,
        "hallucinated": [{"image_id": i, "objects": list(o)} for i, o in result.hallucinated],
        "generated": [{"image_id": i, "caption": c} for i, c in pairs],
    }


def pope_command(
    questions: Annotated[
        list[Path],
        typer.Option(
            help="POPE question file(s) (JSONL: "
            "question_id, image, text, label); repeat "
            "for random, popular, adversarial."
        ),
    ],
    answers: Annotated[
        list[Path],
        typer.Option(help="Answer file(s) (JSONL: question_id, text), one per question file."),
    ] = [],  # noqa: B006
    model: Model = None,
    adapter: Adapter = None,
    images: Images = None,
    suffix: Annotated[
        str,
        typer.Option(help="With --model: appended to each question, as LLaVA's evaluation does."),
    ] = " Answer the question using a single word or phrase.",
    json_out: JsonOut = None,
) -> None:
    """POPE accuracy, precision, recall, F1 and yes-ratio, LLaVA's yes/no parsing."""
    from evaluation.coco_files import EvalFileError

    try:
        if bool(answers) == (model is not None) or (answers and len(answers) != len(questions)):
            raise EvalFileError("give one --answers file per --questions file, or --model")
        answerer = _Answerer(model, adapter, images) if model is not None else None
        results = _pope_results(questions, answers, answerer, suffix)
    except (EvalFileError, ValueError) as e:
        _fail(e)
    _print_pope(results)
    if json_out is not None:
        json_out.write_text(json.dumps(results, indent=2))


def _pope_results(
    questions: list[Path], answers: list[Path], answerer: _Answerer | None, suffix: str
) -> dict[str, dict]:
    """Each question file's scores, named by its stem (its path where stems repeat)."""
    from evaluation.coco_files import read_pope_answers, read_pope_questions, score_pope

    results = {}
    stems = [path.stem for path in questions]
    for n, path in enumerate(questions):
        asked = read_pope_questions(path)
        if answerer is not None:
            replies = answerer([q.image for q in asked], [q.text + suffix for q in asked], 16)
            given = {q.question_id: r for q, r in zip(asked, replies)}
        else:
            given = read_pope_answers(answers[n])
        name = path.stem if stems.count(path.stem) == 1 else str(path)
        results[name] = score_pope(asked, given)
    return results


def _print_pope(results: dict[str, dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("questions", "n", "accuracy", "precision", "recall", "F1", "yes-ratio")
    for name, r in results.items():
        table.add_row(
            name,
            str(r["questions"]),
            *(f"{r[k]:.3f}" for k in ("accuracy", "precision", "recall", "f1", "yes_ratio")),
        )
    Console().print(table)
