"""The input-rail pass with NeMo's own Colang runtime functions against railgraph's drop-ins, in one process.

    python bench/colang_runtime.py [--dataset ../shared/data/guard/dev.csv] [--prompts 680] [--json]

Every prompt of the dataset goes through ``rails.Guard.check_input`` twice: once with NeMo's ``eval_expression``
and ``compute_next_steps`` (stock), once with ``rails.colang_runtime``'s (railgraph), in alternating order so that
neither always runs first. The prompt's MiniLM features are computed afresh each time (the cache is cleared), so
both timings hold the whole pass. Prints p50/p95 of each, the ratio of the medians, and whether every verdict
was the same.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from rails import Guard, checks, colang_runtime
from rails.train import read_rows

ROOT = Path(__file__).resolve().parent.parent


def use(railgraph: bool) -> None:
    """Point NeMo's runtime at railgraph's drop-ins or back at its own functions."""
    for module, name, nemos, ours in colang_runtime.replacements():
        setattr(module, name, ours if railgraph else nemos)


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=ROOT.parent / "shared/data/guard/dev.csv")
    parser.add_argument("--prompts", type=int, default=680, help="the first N prompts of the dataset")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    texts = [row["text"] for row in read_rows(args.dataset)][: args.prompts]
    guard = Guard()
    guard.warm_up()
    millis: dict[str, list[float]] = {"stock": [], "railgraph": []}
    verdicts: dict[str, list[Any]] = {"stock": [], "railgraph": []}
    try:
        for i, text in enumerate(texts):
            for name in ("stock", "railgraph") if i % 2 else ("railgraph", "stock"):
                use(name == "railgraph")
                checks.window_features.cache_clear()
                start = time.perf_counter()
                outcome = guard.check_input(text)
                millis[name].append((time.perf_counter() - start) * 1000)
                verdicts[name].append([(verdict["rail"], verdict["verdict"]) for verdict in outcome.verdicts])
    finally:
        use(True)
        guard.close()
    result = {
        name: {"p50_ms": round(statistics.median(values), 2), "p95_ms": round(percentile(values, 95), 2)}
        for name, values in millis.items()
    }
    result["ratio_of_medians"] = round(statistics.median(millis["stock"]) / statistics.median(millis["railgraph"]), 2)
    result["same_verdicts"] = verdicts["stock"] == verdicts["railgraph"]
    result["prompts"] = len(texts)
    if args.json:
        print(json.dumps(result))
        return
    for name in ("stock", "railgraph"):
        print(f"{name:>9}: p50 {result[name]['p50_ms']:.1f} ms, p95 {result[name]['p95_ms']:.1f} ms")
    print(f"stock / railgraph (medians): {result['ratio_of_medians']:.2f}; same verdicts: {result['same_verdicts']}")


if __name__ == "__main__":
    main()
