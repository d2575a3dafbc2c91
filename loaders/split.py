"""Loaded Documents into chunks that remember where in their page or document they came from."""

from __future__ import annotations

from collections import Counter

from langchain_core.documents import Document
from langchain_text_splitters import RecursiveCharacterTextSplitter

__all__ = ["split_documents"]


def split_documents(docs: list[Document], *, chunk_size: int = 1000, chunk_overlap: int = 150) -> list[Document]:
    """Split Documents into chunks of at most ``chunk_size`` characters, ``chunk_overlap`` shared.

    Each chunk keeps its parent's metadata and gains ``start_index`` and ``end_index`` (so that
    ``parent.page_content[start_index:end_index] == chunk.page_content``) and ``chunk``, its 0-based
    position among all chunks of its ``source`` (counted across pages, in the order given).
    Whitespace-only chunks are dropped.
    """
    splitter = RecursiveCharacterTextSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap, add_start_index=True)
    per_source: Counter[str] = Counter()
    chunks: list[Document] = []
    for chunk in splitter.split_documents(docs):
        if not chunk.page_content.strip():
            continue
        source = str(chunk.metadata.get("source", ""))
        chunk.metadata["end_index"] = chunk.metadata["start_index"] + len(chunk.page_content)
        chunk.metadata["chunk"] = per_source[source]
        per_source[source] += 1
        chunks.append(chunk)
    return chunks
