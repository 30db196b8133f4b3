"""CHAIR under both text rule sets on a file of captions with their true objects.

Each line of the file (JSONL) is an image: `image_id`, `caption` (the text to score),
`objects` (its true COCO categories) and, optionally, `differs` (a hand label: whether the
two rule sets name different objects in the caption). Prints CHAIR_s, CHAIR_i and recall
under each rule set (when the lines have `objects`), the objects each names, how many
captions the two read differently, and with --show those captions.

    python examples/chair_text_rules.py examples/chair_hard_captions.jsonl --show
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from csr.evaluation.chair_text import TextRules
from csr.evaluation.coco import coco_chair, coco_mentions, ground_truth


def read_cases(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(
            f"cannot read {path}: {e}; give a JSONL file of image_id, objects, caption"
        ) from e


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", type=Path)
    parser.add_argument("--show", action="store_true", help="list the captions read differently")
    args = parser.parse_args(argv)
    cases = read_cases(args.cases)
    captions = [(c["image_id"], c["caption"]) for c in cases]
    with_truth = all("objects" in c for c in cases)
    print(f"{len(cases)} captions")
    print(f"{'text rules':<10} {'CHAIR_s':>8} {'CHAIR_i':>8} {'recall':>8} {'mentions':>9}")
    for rules in TextRules:
        mentions = sum(len(coco_mentions(text, rules)) for _, text in captions)
        scores = "no truth".rjust(26)
        if with_truth:
            truth = ground_truth({c["image_id"]: c["objects"] for c in cases}, {}, rules)
            result = coco_chair(captions, truth, rules)
            scores = f"{result.chair_s:>8.3f} {result.chair_i:>8.3f} {result.recall:>8.3f}"
        print(f"{rules.value:<10} {scores} {mentions:>9}")
    differ = [
        (i, text, coco_mentions(text, TextRules.ORIGINAL), coco_mentions(text, TextRules.CLEANED))
        for i, text in captions
        if coco_mentions(text, TextRules.ORIGINAL) != coco_mentions(text, TextRules.CLEANED)
    ]
    print(f"captions read differently: {len(differ)} of {len(cases)}")
    for image_id, text, original, cleaned in differ if args.show else ():
        print(f"  {image_id}: {text}\n     original {original}\n     cleaned  {cleaned}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
