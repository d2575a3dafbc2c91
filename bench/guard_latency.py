"""The input rails' latency per prompt, with and without computing the prompt's MiniLM features ahead of NeMo.

    python bench/guard_latency.py [--dataset ../shared/data/guard/dev.csv] [--prompts 200] [--rounds 3]

``rails.Guard`` starts the MiniLM features of a prompt's first window on the model thread before NeMo's Colang
runtime works through the input flows (``Guard.prefetch_features``), so the model and the runtime overlap. Both
ways run in this process on the same prompts, alternating round by round (each round with fresh prompts to the
feature cache: a counter is appended). Prints the median and p95 milliseconds per prompt of each and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from rails import Guard
from rails.train import DEFAULT_DATA, read_rows


def timings(guard: Guard, prompts: list[str], tag: str) -> list[float]:
    """Milliseconds of ``check_input`` per prompt (each made new to the feature cache by ``tag``)."""
    millis = []
    for prompt in prompts:
        start = time.perf_counter()
        guard.check_input(f"{prompt} ({tag})")
        millis.append((time.perf_counter() - start) * 1000)
    return millis


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATA.with_name("dev.csv"))
    parser.add_argument("--prompts", type=int, default=200, help="the first N prompts of the dataset")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    prompts = [row["text"] for row in read_rows(args.dataset)[: args.prompts]]
    guard = Guard()
    guard.warm_up()
    results: dict[bool, list[float]] = {True: [], False: []}
    try:
        for round_ in range(args.rounds):
            for prefetch in (True, False):
                guard.prefetch_features = prefetch
                results[prefetch] += timings(guard, prompts, f"round {round_} {prefetch}")
    finally:
        guard.close()

    def line(name: str, millis: list[float]) -> str:
        p95 = statistics.quantiles(millis, n=20)[18]
        return f"{name:22} p50 {statistics.median(millis):6.1f} ms  p95 {p95:6.1f} ms"

    print(f"{len(prompts)} prompts x {args.rounds} rounds")
    print(line("features prefetched", results[True]))
    print(line("features in the rail", results[False]))
    ratio = statistics.median(results[True]) / statistics.median(results[False])
    print(f"p50 ratio prefetched / in the rail: {ratio:.3f}")


if __name__ == "__main__":
    main()
