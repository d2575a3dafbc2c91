"""Where one `ask` turn spends its time: per node, plus checkpoint writes, in extractive mode and with a GGUF.

    python bench/turn_timing.py [--turns 10] [--gguf .cache/models/SmolLM2-135M-Instruct.Q4_1.gguf]

Prints median milliseconds per node over the turns, and each part's share of the whole turn.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from langchain_core.messages import HumanMessage

from agent.configuration import Settings
from agent.graph import build_agent
from agent.memory import SqliteCheckpointer
from agent.services import Services
from loaders.ingest import file_units, ingest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT.parent / "shared" / "data" / "documents" / "unstructured_example_docs"
QUESTIONS = [
    "Where was Iwan Roberts born?",
    "How many caps did Iwan Roberts win for Wales?",
    "Which clubs did Iwan Roberts play for?",
    "What are the important points of the test document?",
    "Who won the most Stanley Cups?",
]


class TimedCheckpointer(SqliteCheckpointer):
    """Adds up the seconds spent writing checkpoints and pending writes."""

    seconds = 0.0

    def put(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return super().put(*args, **kwargs)
        finally:
            TimedCheckpointer.seconds += time.perf_counter() - start

    def put_writes(self, *args: Any, **kwargs: Any) -> None:
        start = time.perf_counter()
        try:
            super().put_writes(*args, **kwargs)
        finally:
            TimedCheckpointer.seconds += time.perf_counter() - start


def time_turns(settings: Settings, services: Services, turns: int) -> dict[str, list[float]]:
    graph = build_agent(services=services, checkpointer=TimedCheckpointer.open(settings.sqlite_path))
    timings: dict[str, list[float]] = defaultdict(list)
    for turn in range(turns + 1):  # the first turn warms models and caches up and is not counted
        question = QUESTIONS[turn % len(QUESTIONS)]
        TimedCheckpointer.seconds = 0.0
        started: dict[str, float] = {}
        per_node: dict[str, float] = {}
        begin = time.perf_counter()
        for event in graph.stream(
            {"messages": [HumanMessage(question)]},
            {"configurable": {"thread_id": f"bench-{turn}"}},
            stream_mode="debug",
        ):
            name = event["payload"].get("name")
            if event["type"] == "task":
                started[name] = time.perf_counter()
            elif event["type"] == "task_result":
                per_node[name] = time.perf_counter() - started[name]
        total = time.perf_counter() - begin
        if turn == 0:
            continue
        for name, seconds in per_node.items():
            timings[name].append(seconds * 1000)
        timings["checkpoint writes"].append(TimedCheckpointer.seconds * 1000)
        timings["whole turn"].append(total * 1000)
    return timings


def report(title: str, timings: dict[str, list[float]]) -> None:
    whole = statistics.median(timings["whole turn"])
    print(f"\n{title}: median of {len(timings['whole turn'])} turns")
    for name, values in timings.items():
        median = statistics.median(values)
        print(f"  {name:18} {median:9.1f} ms  {median / whole:6.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--gguf", type=Path, default=ROOT / ".cache" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp())
    base = Settings(db=f"sqlite:///{workdir / 'bench.db'}", llm="extractive")
    extractive = Services.create(base)
    ingest(file_units([DOCS]), extractive.store)
    report("extractive", time_turns(base, extractive, args.turns))
    if args.gguf.is_file():
        gguf = base.model_copy(update={"llm": f"llamacpp:{args.gguf}"})
        report(
            f"llamacpp {args.gguf.name}",
            time_turns(gguf, Services.create(gguf, guard=extractive.guard), args.turns),
        )


if __name__ == "__main__":
    main()
