"""railgraph's input rails against NeMo's LLM ``self check input`` rail, side by side, on the same prompts.

    python bench/guard_selfcheck.py [--dataset ../shared/data/guard/dev.csv] [--per-label 20] [--json]

The self-check rail runs with the small GGUF model in-process (``agent.llamacpp.ChatLlamaCpp``, the
prompt of rails/prompts.yml); railgraph's rails are the packaged config (YARA, classifier, topics).
Both see the same sample: the first ``--per-label`` prompts of each label of the dataset (``0`` for
all of them; the self-check rail costs about a second per prompt here). Prints TPR, FPR and p50/p95
milliseconds per prompt for each, and the ratios self-check / railgraph.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from agent.cli import progress_bar
from agent.llamacpp import ChatLlamaCpp
from rails import DEFAULT_CONFIG_DIR, Guard
from rails.train import DEFAULT_DATA, evaluate_guard, read_rows

ROOT = Path(__file__).resolve().parent.parent
GGUF = ROOT / ".cache" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
err = Console(stderr=True)


def sample(rows: list[dict[str, str]], per_label: int) -> list[dict[str, str]]:
    """The first ``per_label`` rows of each label, in file order (all rows when ``per_label`` is 0)."""
    if per_label <= 0:
        return rows
    taken: dict[str, int] = {}
    chosen = []
    for row in rows:
        if taken.get(row["label"], 0) < per_label:
            taken[row["label"]] = taken.get(row["label"], 0) + 1
            chosen.append(row)
    return chosen


def selfcheck_config(folder: Path) -> Path:
    """A copy of the packaged rails whose only input rail is ``self check input``."""
    target = folder / "rails"
    shutil.copytree(DEFAULT_CONFIG_DIR, target, ignore=shutil.ignore_patterns("__pycache__"))
    config_file = target / "config.yml"
    config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    config["rails"]["input"]["flows"] = ["self check input"]
    config_file.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return target


def run(name: str, guard: Guard, rows: list[dict[str, str]]) -> dict[str, Any]:
    """``evaluate_guard`` over the whole input-rail pass of ``guard``, with a progress bar on stderr."""
    guard.warm_up()
    with progress_bar() as progress:
        task = progress.add_task(name, total=len(rows))
        return evaluate_guard(lambda text: guard.check_input(text).blocked, rows, lambda _: progress.advance(task))


def main() -> None:
    """Run both guards on the sample and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATA.with_name("dev.csv"))
    parser.add_argument("--per-label", type=int, default=20, help="prompts per label (0: all)")
    parser.add_argument("--gguf", type=Path, default=GGUF)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    try:
        rows = sample(read_rows(args.dataset, on_error=err.print), args.per_label)
    except ValueError as error:
        sys.exit(f"error: {error}")
    if not args.gguf.is_file():
        sys.exit(f"error: {args.gguf} is missing: pass --gguf PATH to a GGUF chat model")

    results: dict[str, Any] = {"dataset": str(args.dataset), "prompts": len(rows)}
    railgraph = Guard()
    try:
        results["railgraph"] = run("railgraph rails", railgraph, rows)
    finally:
        railgraph.close()
    with tempfile.TemporaryDirectory(prefix="railgraph-selfcheck-") as scratch:
        # Deterministic answers; "Yes"/"No" needs a couple of tokens, and a long jailbreak needs the context.
        llm = ChatLlamaCpp(model_path=args.gguf, n_ctx=8192, max_tokens=4, temperature=0.0)
        selfcheck = Guard(selfcheck_config(Path(scratch)), llm=llm)
        try:
            results["self_check"] = run("self check input", selfcheck, rows)
        finally:
            selfcheck.close()
    ours, theirs = results["railgraph"]["latency_ms"], results["self_check"]["latency_ms"]
    results["self_check_over_railgraph"] = {
        key: round(theirs[key] / ours[key], 1) if ours[key] else None for key in ("p50", "p95")
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{len(rows)} prompts of {args.dataset.name} ({args.per_label or 'all'} per label)")
    print(f"{'':18}{'TPR':>7}{'FPR':>7}{'p50 ms':>10}{'p95 ms':>10}")
    for name in ("railgraph", "self_check"):
        part = results[name]
        latency = part["latency_ms"]
        print(f"{name:18}{part['tpr']:>7.3f}{part['fpr']:>7.3f}{latency['p50']:>10.1f}{latency['p95']:>10.1f}")
    ratio = results["self_check_over_railgraph"]
    print(f"self check / railgraph latency: p50 x{ratio['p50']}, p95 x{ratio['p95']}")


if __name__ == "__main__":
    main()
