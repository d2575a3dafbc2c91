"""The retrieval rail against indirect prompt injection, measured: clean chunks withheld against planted attacks caught.

    python bench/chunk_injection.py [--data ../shared/data] [--mini-wikipedia 800] [--json]

Clean chunks: every chunk of the shared documents (as `railgraph ingest` splits them), the XQuAD passages and the
first ``--mini-wikipedia`` mini-Wikipedia passages. Poisoned chunks: each jailbreak and injection prompt of the
guard's dev.csv pasted into the middle of an XQuAD passage (the passages taken in turn). Both go through
``rails.checks.check_chunk_injection`` with the packaged rules and classifier heads of ``rails/config.yml``; the
table gives, per threshold, the share of clean chunks withheld and of poisoned chunks caught, and the rules'
share alone (a rule match withholds a chunk whatever the threshold).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import yaml

from agent.evaluation import read_jsonl
from loaders import LoadError, load_file, split_documents
from rails import DEFAULT_CONFIG_DIR
from rails.checks import check_chunk_injection, chunk_injection_settings
from rails.train import read_rows

ROOT = Path(__file__).resolve().parent.parent
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def clean_chunks(data: Path, mini_wikipedia: int) -> list[str]:
    """Chunks of ordinary documents: the shared files, XQuAD, the first mini-Wikipedia passages."""
    chunks: list[str] = []
    for path in sorted((data / "documents").rglob("*")):
        if path.is_file():
            try:
                chunks += [chunk.page_content for chunk in split_documents(load_file(path))]
            except LoadError:
                continue  # encrypted or scanned PDFs: nothing to screen
    chunks += passages(data / "rag" / "xquad" / "corpus.jsonl")
    chunks += passages(data / "rag" / "mini_wikipedia" / "corpus.jsonl")[:mini_wikipedia]
    return [chunk for chunk in chunks if chunk.strip()]


def passages(path: Path) -> list[str]:
    return [row["text"] for row in read_jsonl(path, ("text",))]


def poisoned_chunks(data: Path) -> list[str]:
    """Each dev.csv jailbreak and injection pasted into the middle of an XQuAD passage."""
    hosts = passages(data / "rag" / "xquad" / "corpus.jsonl")
    rows = read_rows(data / "guard" / "dev.csv")
    attacks = [row["text"] for row in rows if row["label"] in ("jailbreak", "injection")]
    chunks = []
    for i, attack in enumerate(attacks):
        host = hosts[i % len(hosts)]
        middle = host.find(" ", len(host) // 2)
        chunks.append(f"{host[:middle]} {attack} {host[middle + 1 :]}")
    return chunks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--mini-wikipedia", type=int, default=800, help="mini-Wikipedia passages among the clean")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    config = yaml.safe_load((DEFAULT_CONFIG_DIR / "config.yml").read_text(encoding="utf-8"))
    settings = chunk_injection_settings(config["custom_data"], DEFAULT_CONFIG_DIR)
    settings["threshold"] = float("inf")  # scores only; the thresholds are swept below
    result: dict[str, object] = {
        "heads": list(settings["heads"]),
        "configured_threshold": config["custom_data"]["retrieval_injection"]["threshold"],
    }
    for name, chunks in (
        ("clean", clean_chunks(args.data, args.mini_wikipedia)),
        ("poisoned", poisoned_chunks(args.data)),
    ):
        start = time.perf_counter()
        findings = check_chunk_injection(chunks, **settings)
        seconds = time.perf_counter() - start
        scores = np.array([finding.score for finding in findings], dtype=float)
        ruled = np.array([finding.detail.startswith("matched ") for finding in findings])
        result[name] = {
            "chunks": len(chunks),
            "rules": round(float(ruled.mean()), 4),
            "withheld": {str(t): round(float((ruled | (scores >= t)).mean()), 4) for t in THRESHOLDS},
            "ms_per_chunk": round(seconds * 1000 / len(chunks), 1),
        }
    if args.json:
        print(json.dumps(result))
        return
    print(f"heads {result['heads']}, configured threshold {result['configured_threshold']}")
    for name in ("clean", "poisoned"):
        part = result[name]
        assert isinstance(part, dict)
        rates = ", ".join(f"{t}: {rate:.1%}" for t, rate in part["withheld"].items())
        print(f"{name:9} {part['chunks']:5} chunks, rules alone {part['rules']:.1%}; withheld at {rates}")


if __name__ == "__main__":
    main()
