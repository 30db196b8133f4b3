"""`csr chair` and `csr pope` on small COCO-format fixtures written here, read by pycocotools:
the numbers are worked out by hand; bad files get a message that names them; `--model`
writes the answers with a saved tiny LLaVA and scores them as the answers-file path does."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from csr_cli.main import main
from evaluation.coco_files import EvalFileError, read_pope_questions

CATEGORIES = [
    {"id": 18, "name": "dog", "supercategory": "animal"},
    {"id": 34, "name": "frisbee", "supercategory": "sports"},
    {"id": 3, "name": "car", "supercategory": "vehicle"},
    {"id": 59, "name": "pizza", "supercategory": "food"},
]
IMAGES = [
    {"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg", "width": 40, "height": 40}
    for i in (1, 2, 3)
]


def _annotation(n, image_id, category_id):
    return {
        "id": n,
        "image_id": image_id,
        "category_id": category_id,
        "iscrowd": 0,
        "area": 10.0,
        "bbox": [0, 0, 5, 5],
        "segmentation": [[0, 0, 5, 0, 5, 5]],
    }


@pytest.fixture()
def coco(tmp_path):
    instances = {
        "images": IMAGES,
        "categories": CATEGORIES,
        "annotations": [
            _annotation(1, 1, 18),
            _annotation(2, 1, 34),
            _annotation(3, 2, 3),
            _annotation(4, 3, 59),
        ],
    }
    captions = {
        "images": IMAGES,
        "annotations": [
            {"id": 10, "image_id": 2, "caption": "A man standing by his car."},
            {"id": 11, "image_id": 1, "caption": "A puppy with a frisbee."},
        ],
    }
    (tmp_path / "instances.json").write_text(json.dumps(instances))
    (tmp_path / "captions.json").write_text(json.dumps(captions))
    return tmp_path


def test_chair_of_a_captions_file_by_hand(coco, capsys):
    rows = [
        {"image_id": 1, "caption": "A dog catches a frisbee next to a cat."},  # cat false
        {"image_id": 2, "caption": "A man drives a car."},  # man: true via the captions
        {"image_id": 3, "caption": "A pizza with a knife and a fork."},
    ]  # 2 of 3 false
    (coco / "generated.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(SystemExit) as done:
        main(
            [
                "chair",
                "--instances",
                str(coco / "instances.json"),
                "--references",
                str(coco / "captions.json"),
                "--captions",
                str(coco / "generated.jsonl"),
                "--json",
                str(coco / "out.json"),
            ]
        )
    assert done.value.code == 0
    result = json.loads((coco / "out.json").read_text())
    assert result["chair_s"] == pytest.approx(2 / 3)
    assert result["chair_i"] == pytest.approx(3 / 8)  # mentions: 3 + 2 + 3
    assert result["recall"] == pytest.approx((2 + 2 + 1) / 5)
    assert result["hallucinated"] == [
        {"image_id": 1, "objects": ["cat"]},
        {"image_id": 3, "objects": ["knife", "fork"]},
    ]
    # without the reference captions, "man" on image 2 is a hallucination
    with pytest.raises(SystemExit):
        main(
            [
                "chair",
                "--instances",
                str(coco / "instances.json"),
                "--captions",
                str(coco / "generated.jsonl"),
                "--json",
                str(coco / "out.json"),
            ]
        )
    assert json.loads((coco / "out.json").read_text())["chair_s"] == pytest.approx(1.0)


def test_text_rules_read_references_and_captions_alike(coco):
    # image 2's reference names a bus ("bu" to the original, so no bus in its truth there)
    captions = json.loads((coco / "captions.json").read_text())
    captions["annotations"].append({"id": 12, "image_id": 2, "caption": "A bus behind a car."})
    (coco / "captions.json").write_text(json.dumps(captions))
    rows = [
        {"image_id": 1, "caption": "Two hot-dogs and a dog-walker with a frisbee."},
        {"image_id": 2, "caption": "A man, a car and two buses."},
    ]
    (coco / "generated.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    results = {}
    for rules in ("original", "cleaned"):
        with pytest.raises(SystemExit) as done:
            main(
                [
                    "chair",
                    "--instances",
                    str(coco / "instances.json"),
                    "--references",
                    str(coco / "captions.json"),
                    "--captions",
                    str(coco / "generated.jsonl"),
                    "--text-rules",
                    rules,
                    "--json",
                    str(coco / f"{rules}.json"),
                ]
            )
        assert done.value.code == 0
        results[rules] = json.loads((coco / f"{rules}.json").read_text())
    original, cleaned = results["original"], results["cleaned"]
    # original: truth 1 {dog, frisbee}, 2 {car, person}; image 1 names [frisbee], image 2
    # [person, car, bus]: the buses are false
    assert original["text_rules"] == "original"
    assert (original["chair_s"], original["chair_i"]) == (
        pytest.approx(1 / 2),
        pytest.approx(1 / 4),
    )
    assert original["recall"] == pytest.approx((1 + 2) / (2 + 2))
    assert original["hallucinated"] == [{"image_id": 2, "objects": ["bus"]}]
    # cleaned: truth 2 gains the bus; image 1 names [hot dog, dog, person, frisbee]
    assert cleaned["text_rules"] == "cleaned"
    assert (cleaned["chair_s"], cleaned["chair_i"]) == (pytest.approx(1 / 2), pytest.approx(2 / 7))
    assert cleaned["recall"] == pytest.approx((2 + 3) / (2 + 3))
    assert cleaned["hallucinated"] == [{"image_id": 1, "objects": ["hot dog", "person"]}]


def _pope_files(root):
    questions = [
        ("COCO_val2014_000000000001.jpg", "Is there a dog in the image?", "yes"),
        ("COCO_val2014_000000000001.jpg", "Is there a car in the image?", "no"),
        ("COCO_val2014_000000000002.jpg", "Is there a car in the image?", "yes"),
        ("COCO_val2014_000000000002.jpg", "Is there a pizza in the image?", "no"),
    ]
    (root / "coco_pope_adversarial.json").write_text(
        "\n".join(
            json.dumps({"question_id": n + 1, "image": img, "text": text, "label": label})
            for n, (img, text, label) in enumerate(questions)
        )
    )
    answers = ["Yes, there is a dog.", "Yes", "No, it is not.", "No"]  # tp, fp, fn, tn
    (root / "answers.jsonl").write_text(
        "\n".join(json.dumps({"question_id": n + 1, "text": a}) for n, a in enumerate(answers))
    )


def test_pope_of_an_answers_file_by_hand(tmp_path):
    _pope_files(tmp_path)
    with pytest.raises(SystemExit) as done:
        main(
            [
                "pope",
                "--questions",
                str(tmp_path / "coco_pope_adversarial.json"),
                "--answers",
                str(tmp_path / "answers.jsonl"),
                "--json",
                str(tmp_path / "o.json"),
            ]
        )
    assert done.value.code == 0
    result = json.loads((tmp_path / "o.json").read_text())["coco_pope_adversarial"]
    assert result == {
        "accuracy": 0.5,
        "precision": 0.5,
        "recall": 0.5,
        "f1": 0.5,
        "yes_ratio": 0.5,
        "questions": 4,
    }


def test_bad_files_are_named_with_the_fix(tmp_path, capsys):
    (tmp_path / "q.jsonl").write_text(
        '{"question_id": 1, "image": "a.jpg", "text": "?", "label": "maybe"}'
    )
    with pytest.raises(EvalFileError, match=r"q.jsonl: entry 1 has label 'maybe'"):
        read_pope_questions(tmp_path / "q.jsonl")
    (tmp_path / "c.jsonl").write_text('{"image": 1, "caption": "A dog."}')
    with pytest.raises(SystemExit) as done:
        main(
            [
                "chair",
                "--instances",
                str(tmp_path / "missing.json"),
                "--captions",
                str(tmp_path / "c.jsonl"),
            ]
        )
    assert done.value.code == 2
    assert "no 'image_id'" in capsys.readouterr().err
    (tmp_path / "instances.json").write_text(
        json.dumps({"images": IMAGES, "categories": CATEGORIES, "annotations": []})
    )
    (tmp_path / "c.jsonl").write_text('{"image_id": 7, "caption": "A dog."}')
    with pytest.raises(SystemExit):  # an image of another split is no empty image
        main(
            [
                "chair",
                "--instances",
                str(tmp_path / "instances.json"),
                "--captions",
                str(tmp_path / "c.jsonl"),
            ]
        )
    assert "1 captioned images are not in" in capsys.readouterr().err
    _pope_files(tmp_path)
    (tmp_path / "twice.jsonl").write_text(
        '{"question_id": 1, "text": "Yes"}\n{"question_id": 1, "text": "No"}'
    )
    with pytest.raises(SystemExit):
        main(
            [
                "pope",
                "--questions",
                str(tmp_path / "coco_pope_adversarial.json"),
                "--answers",
                str(tmp_path / "twice.jsonl"),
            ]
        )
    assert "answers question 1 again" in capsys.readouterr().err
    (tmp_path / "answers.jsonl").write_text('{"question_id": 1, "text": "Yes"}')
    with pytest.raises(SystemExit):
        main(
            [
                "pope",
                "--questions",
                str(tmp_path / "coco_pope_adversarial.json"),
                "--answers",
                str(tmp_path / "answers.jsonl"),
            ]
        )
    assert "3 questions have no answer" in capsys.readouterr().err


def test_model_answers_are_scored_like_an_answers_file(coco, tmp_path):
    from evaluation.generate import answers, load_model
    from tests.models.llava import build_tiny_llava

    build_tiny_llava(tmp_path / "vlm", seed=1)
    images = tmp_path / "val2014"
    images.mkdir()
    for n, image in enumerate(IMAGES):
        Image.new("RGB", (40, 40), (60 * n, 120, 200)).save(images / image["file_name"])
    _pope_files(tmp_path)
    questions = tmp_path / "coco_pope_adversarial.json"
    with pytest.raises(SystemExit):
        main(
            [
                "pope",
                "--questions",
                str(questions),
                "--model",
                str(tmp_path / "vlm"),
                "--images",
                str(images),
                "--json",
                str(tmp_path / "m.json"),
            ]
        )
    by_model = json.loads((tmp_path / "m.json").read_text())["coco_pope_adversarial"]
    asked = read_pope_questions(questions)
    model, processor = load_model(tmp_path / "vlm")
    replies = answers(
        model,
        processor,
        [Image.open(images / q.image).convert("RGB") for q in asked],
        [q.text + " Answer the question using a single word or phrase." for q in asked],
        max_new_tokens=16,
    )
    (tmp_path / "own.jsonl").write_text(
        "\n".join(
            json.dumps({"question_id": q.question_id, "text": r}) for q, r in zip(asked, replies)
        )
    )
    with pytest.raises(SystemExit):
        main(
            [
                "pope",
                "--questions",
                str(questions),
                "--answers",
                str(tmp_path / "own.jsonl"),
                "--json",
                str(tmp_path / "a.json"),
            ]
        )
    assert json.loads((tmp_path / "a.json").read_text())["coco_pope_adversarial"] == by_model
    with pytest.raises(SystemExit):
        main(
            [
                "chair",
                "--instances",
                str(coco / "instances.json"),
                "--model",
                str(tmp_path / "vlm"),
                "--images",
                str(images),
                "--max-new-tokens",
                "8",
                "--json",
                str(tmp_path / "c.json"),
            ]
        )
    chaired = json.loads((tmp_path / "c.json").read_text())
    assert chaired["captions"] == 3 and [g["image_id"] for g in chaired["generated"]] == [1, 2, 3]
