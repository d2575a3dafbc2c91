"""Ingest throughput: railgraph's ingest end to end against the embedding model alone and a plain LangChain pipeline.

    python bench/ingest_throughput.py [--corpus PATH] [--passages 3200] [--repeats 3] [--batch-chunks N] [--profile]

The corpus (default: the 3,200 mini-Wikipedia passages of ../shared/data) is written as one .txt file per passage,
so every pipeline reads real files. In the same process, each repeat times, on the same chunks:

- railgraph: ``loaders.ingest.ingest`` over ``file_units`` of the folder into a fresh SQLite file (load, split,
  hash, records, embedding, one transaction per file);
- (a) the limit: the MiniLM model alone encoding the texts railgraph embeds (``embedded_text`` of each chunk),
  in one call;
- (b) plain LangChain: the same loader (``load_file``) and splitter, then ``InMemoryVectorStore.add_documents``
  with the same MiniLM weights through LangChain's own integration, ``HuggingFaceEmbeddings`` (langchain-huggingface,
  its defaults), as a LangChain user writes it;
- (b') the same pipeline given railgraph's own embeddings (``MiniLMEmbeddings``: bfloat16 where the CPU has it,
  forward passes of 16 length-sorted texts). Its model calls are railgraph's, so railgraph, which does all it does
  and more (hashes, records, SQLite, full text), can at best match it: the ratio shows what that extra work costs.

It prints the median chunks/s of each and the median over repeats of the ratios railgraph/(a) (goal >= 0.85),
railgraph/(b) (goal >= 1) and railgraph/(b'), the pipelines running in a rotating order, per wall-clock second and
per CPU second of this process (all its threads): on a machine shared with other work the wall clock mostly measures the
others, the CPU time less so (but threads spinning for a busy core count too). ``--batch-chunks`` sets the
ingest's embedding batch (default ``EMBED_BATCH_CHUNKS``); ``--profile`` adds a cProfile of one more railgraph run,
by cumulative time.
Progress goes to stderr, results to stdout.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_huggingface import HuggingFaceEmbeddings

from agent.db import Database
from agent.embeddings import default_embeddings, minilm_path, model_thread
from agent.store import ChunkStore, embedded_text
from loaders import LoadError, iter_files, load_file, split_documents
from loaders.ingest import EMBED_BATCH_CHUNKS, file_units, ingest

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "data" / "rag" / "mini_wikipedia" / "corpus.jsonl"
GOAL_VS_MODEL = 0.85


def write_corpus(corpus: Path, passages: int, folder: Path) -> int:
    """The first ``passages`` passages of ``corpus`` as ``<id>.txt`` files in ``folder``; how many were left out.

    A passage the loader refuses is left out, so that every pipeline gets the same chunks (26 mini-Wikipedia
    passages are mojibake full of C1 control characters, which ``load_file`` takes for binary content).
    """
    left_out = 0
    with corpus.open(encoding="utf-8") as lines:
        for n, line in enumerate(lines):
            if n == passages:
                break
            row = json.loads(line)
            path = folder / f"{row['id']}.txt"
            path.write_text(row["text"], encoding="utf-8")
            try:
                load_file(path)
            except LoadError:
                path.unlink()
                left_out += 1
    return left_out


def railgraph(folder: Path, scratch: Path, run: int, batch_chunks: int) -> int:
    """One ingest of ``folder`` into a fresh database; the chunks it added."""
    store = ChunkStore(Database(scratch / f"ingest-{run}.db"), default_embeddings())
    report = ingest(file_units([folder]), store, batch_chunks=batch_chunks)
    store.db.close()
    if report.failed:
        raise SystemExit(f"the bench corpus failed to load: {report.failed[0]['error']}")
    return report.added


def model_alone(texts: list[str]) -> int:
    default_embeddings().embed_documents(texts)
    return len(texts)


def langchain(folder: Path, embeddings: Embeddings) -> int:
    """Load, split and add to an in-memory vector store, as a plain LangChain pipeline does."""
    chunks = split_documents([document for path in iter_files([folder]) for document in load_file(path)])
    InMemoryVectorStore(embeddings).add_documents(chunks)
    return len(chunks)


def timed(run: Callable[[], int]) -> tuple[int, float, float]:
    """The chunks ``run`` handled, and the wall-clock and CPU seconds it took."""
    wall, cpu = time.perf_counter(), time.process_time()
    chunks = run()
    return chunks, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="JSONL rows {id, text}")
    parser.add_argument("--passages", type=int, default=3200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-chunks", type=int, default=EMBED_BATCH_CHUNKS)
    parser.add_argument("--profile", action="store_true", help="profile one more railgraph run")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="railgraph-bench-") as tmp:
        scratch = Path(tmp)
        folder = scratch / "corpus"
        folder.mkdir()
        left_out = write_corpus(args.corpus, args.passages, folder)
        chunks = split_documents([document for path in iter_files([folder]) for document in load_file(path)])
        texts = [embedded_text(chunk.page_content, chunk.metadata) for chunk in chunks]
        print(f"{args.passages - left_out} passages ({left_out} the loader refuses left out) -> {len(chunks)} chunks")
        # (b)'s model runs on railgraph's model thread, so that the process has one OpenMP pool: a second pool (this
        # thread's) makes libgomp stop spinning, which slows every pipeline after it (see model_thread).
        runner = model_thread()
        langchain_embeddings = runner.submit(HuggingFaceEmbeddings, model_name=str(minilm_path())).result()
        # Load the models, and let oneDNN build its kernels for every text length, before any timing: the first
        # pipeline to run would pay for that alone (railgraph run first measured ~10% slower than its later runs).
        default_embeddings().embed_documents(texts)
        runner.submit(langchain_embeddings.embed_documents, texts[:64]).result()

        names = ("railgraph", "model alone (a)", "LangChain (b)", "LangChain (b')")
        rates: dict[str, dict[str, list[float]]] = {clock: {name: [] for name in names} for clock in ("wall", "cpu")}
        for repeat in range(args.repeats):
            runs = {
                "railgraph": lambda repeat=repeat: railgraph(folder, scratch, repeat, args.batch_chunks),
                "model alone (a)": lambda: model_alone(texts),
                "LangChain (b)": lambda: runner.submit(langchain, folder, langchain_embeddings).result(),
                "LangChain (b')": lambda: langchain(folder, default_embeddings()),
            }
            # A different order each repeat, so that no pipeline always runs first (on a warm or a quiet machine).
            order = list(runs)[repeat % len(runs) :] + list(runs)[: repeat % len(runs)]
            for name in order:
                count, wall, cpu = timed(runs[name])
                if count != len(chunks):
                    raise SystemExit(f"{name} handled {count} chunks, not {len(chunks)}")
                rates["wall"][name].append(count / wall)
                rates["cpu"][name].append(count / cpu)
                print(
                    f"repeat {repeat + 1}/{args.repeats} {name}: {count / wall:.1f} chunks/s,"
                    f" {count / cpu:.1f} chunks/CPU-s",
                    file=sys.stderr,
                )

        print(f"medians of {args.repeats} repeats (embedding batch {args.batch_chunks} chunks), ratios per repeat:")
        print(f"{'':18} {'chunks/s':>10} {'chunks/CPU-s':>13}")
        medians = {
            clock: {name: statistics.median(values) for name, values in by.items()} for clock, by in rates.items()
        }
        for name in names:
            print(f"{name:18} {medians['wall'][name]:10.1f} {medians['cpu'][name]:13.1f}")
        # The ratio of each repeat's runs, which ran back to back under the same load, then their median: steadier
        # than the ratio of medians when other work comes and goes.
        goals = {
            "model alone (a)": f"goal >= {GOAL_VS_MODEL}",
            "LangChain (b)": "goal >= 1",
            "LangChain (b')": "at most ~1",
        }
        for baseline, goal in goals.items():
            ratios = [
                statistics.median(
                    ours / theirs
                    for ours, theirs in zip(rates[clock]["railgraph"], rates[clock][baseline], strict=True)
                )
                for clock in ("wall", "cpu")
            ]
            label = baseline[baseline.index("(") :]
            print(f"railgraph / {label:6} {ratios[0]:10.3f} {ratios[1]:13.3f}   ({goal})")

        if args.profile:
            profile = cProfile.Profile()
            profile.runcall(railgraph, folder, scratch, args.repeats, args.batch_chunks)
            pstats.Stats(profile, stream=sys.stdout).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
