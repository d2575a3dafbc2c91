"""Storage of one long thread, with and without checkpoint pruning, in extractive mode (real turns).

    python bench/thread_growth.py [--turns 50 100 200]

For each pruning setting (RAILGRAPH_KEEP_CHECKPOINTS=0 keeps every checkpoint: the baseline; 1 is the default) one
thread is asked questions turn after turn on a fresh database; at each mark it prints the bytes the thread takes
(checkpoint, metadata and write blobs), the database file's size (with its WAL), and the ratio of the thread's
bytes to the UTF-8 bytes of its messages' text.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from agent.configuration import Settings
from agent.graph import build_agent
from agent.memory import SqliteCheckpointer
from agent.services import Services
from agent.turns import ask, thread_config
from loaders.ingest import file_units, ingest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT.parent / "shared" / "data" / "documents" / "unstructured_example_docs"
QUESTIONS = [
    "Where was Iwan Roberts born?",
    "How many caps did Iwan Roberts win for Wales?",
    "Which clubs did Iwan Roberts play for?",
    "When was Norwich City founded?",
    "Where does Norwich City play its home games?",
    "Who are Norwich City's main rivals?",
]
THREAD = "long-thread"


def run(keep: int, marks: list[int], scratch: Path, console: Console) -> list[dict[str, float]]:
    """Ask ``max(marks)`` turns on one thread with ``keep`` checkpoints kept; measure at each mark."""
    folder = scratch / f"keep-{keep}"
    folder.mkdir()
    settings = Settings(db=f"sqlite:///{folder / 'railgraph.db'}", llm="extractive", keep_checkpoints=keep)
    services = Services.create(settings)
    ingest(file_units([DOCS / "norwich-city.txt"]), services.store)
    saver = SqliteCheckpointer.open(settings.sqlite_path, keep=keep)
    graph = build_agent(services=services, checkpointer=saver)
    rows = []
    started = time.perf_counter()
    with console.status(f"keep={keep}") as status:
        for turn in range(1, max(marks) + 1):
            ask(graph, QUESTIONS[turn % len(QUESTIONS)], thread_id=THREAD)
            status.update(f"keep={keep}: turn {turn}/{max(marks)}")
            if turn not in marks:
                continue
            messages = graph.get_state(thread_config(THREAD)).values["messages"]
            text = sum(len(message.text.encode()) for message in messages)
            stored = saver.thread_bytes(THREAD)
            with saver.cursor() as cur:
                cur.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            size = sum(path.stat().st_size for path in folder.glob("railgraph.db*"))
            rows.append(
                {
                    "keep": keep,
                    "turns": turn,
                    "messages": len(messages),
                    "text_bytes": text,
                    "thread_bytes": stored,
                    "file_bytes": size,
                    "ratio": stored / text,
                    "seconds_per_turn": (time.perf_counter() - started) / turn,
                }
            )
    services.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, nargs="+", default=[50, 100, 200], help="Turn counts to measure at.")
    args = parser.parse_args()
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="railgraph-growth-") as scratch:
        rows = [row for keep in (0, 1) for row in run(keep, sorted(args.turns), Path(scratch), console)]
    table = Table("keep", "turns", "messages", "text KB", "thread KB", "file KB", "ratio", "s/turn")
    for row in rows:
        table.add_row(
            "all" if row["keep"] == 0 else str(row["keep"]),
            str(row["turns"]),
            str(row["messages"]),
            f"{row['text_bytes'] / 1024:.1f}",
            f"{row['thread_bytes'] / 1024:.1f}",
            f"{row['file_bytes'] / 1024:.1f}",
            f"{row['ratio']:.2f}",
            f"{row['seconds_per_turn']:.2f}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
