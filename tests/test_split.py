"""Header-aware chunking: Markdown and HTML chunks know their heading path and keep exact offsets."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.documents import Document
from langchain_text_splitters import RecursiveCharacterTextSplitter

from agent.db import Database
from agent.embeddings import default_embeddings
from agent.store import ChunkStore, SearchOptions, embedded_text
from loaders import load_file, split_documents
from loaders.files import html_to_text

UNSTRUCTURED = "unstructured_example_docs"

GUIDE = """\
railgraph answers questions about your documents.

# Guide

## Install

Run `pip install railgraph`.

```bash
# this comment is code, not a heading
pip install -e .
```

### From source ###

Clone the repository, then build it.

Configuration
=============

Settings come from `railgraph.toml`.

- a list item
---

## Database
Set RAILGRAPH_DB to a database URL.
"""


def md_doc(text: str, source: str = "guide.md") -> Document:
    return Document(page_content=text, metadata={"source": source, "doc_id": "g", "type": "md", "title": source})


def assert_offsets(parents: list[Document], chunks: list[Document]) -> None:
    by_source = {parent.metadata["source"]: parent.page_content for parent in parents}
    for chunk in chunks:
        text = by_source[chunk.metadata["source"]]
        assert text[chunk.metadata["start_index"] : chunk.metadata["end_index"]] == chunk.page_content


def headings_of(chunks: list[Document], needle: str) -> str | None:
    """The headings of the one chunk that contains ``needle``."""
    (found,) = [chunk for chunk in chunks if needle in chunk.page_content]
    return found.metadata["headings"]


def test_markdown_chunks_know_their_heading_path() -> None:
    doc = md_doc(GUIDE)
    chunks = split_documents([doc])
    assert_offsets([doc], chunks)
    assert [c.metadata["chunk"] for c in chunks] == list(range(len(chunks)))
    assert headings_of(chunks, "answers questions") is None  # before the first heading
    # "# Guide" has no text of its own: it opens the Install section rather than being a chunk by itself.
    assert chunks[1].page_content.startswith("# Guide\n\n## Install")
    assert headings_of(chunks, "pip install railgraph") == "Guide > Install"
    assert headings_of(chunks, "this comment is code") == "Guide > Install"  # a '#' line in fenced code
    assert headings_of(chunks, "Clone the repository") == "Guide > Install > From source"  # closing '#'s dropped
    assert headings_of(chunks, "railgraph.toml") == "Configuration"  # setext h1 closes "Guide"
    assert headings_of(chunks, "a list item") == "Configuration"  # "- item" over "---" is no heading
    assert headings_of(chunks, "RAILGRAPH_DB") == "Configuration > Database"
    # The rest of the metadata is the parent's.
    for chunk in chunks:
        assert {k: chunk.metadata[k] for k in ("source", "doc_id", "type", "title")} == (
            {"source": "guide.md", "doc_id": "g", "type": "md", "title": "guide.md"}
        )


def test_long_section_is_split_further_and_keeps_its_headings(documents_dir: Path) -> None:
    # A real long text under a two-level heading path, and a short section after it.
    body = (documents_dir / UNSTRUCTURED / "norwich-city.txt").read_text(encoding="utf-8")[:5000]
    doc = md_doc(f"# Football\n\n## Norwich City\n\n{body}\n\n## Other clubs\n\nIpswich Town.\n")
    chunks = split_documents([doc], chunk_size=500, chunk_overlap=50)
    assert_offsets([doc], chunks)
    norwich = [c for c in chunks if c.metadata["headings"] == "Football > Norwich City"]
    assert len(norwich) >= 10
    assert all(len(c.page_content) <= 500 for c in chunks)
    # No chunk runs over a section boundary.
    assert chunks[-1].page_content == "## Other clubs\n\nIpswich Town."
    assert chunks[-1].metadata["headings"] == "Football > Other clubs"
    assert all("Other clubs" not in c.page_content for c in norwich)


def test_other_types_are_split_as_before(documents_dir: Path) -> None:
    """A .txt with a '#' line is not Markdown: the recursive splitter's chunks, no ``headings`` key."""
    (doc,) = load_file(documents_dir / UNSTRUCTURED / "norwich-city.txt")
    doc.page_content = "# Norwich City F.C.\n\n" + doc.page_content
    chunks = split_documents([doc], chunk_size=300, chunk_overlap=30)
    plain = RecursiveCharacterTextSplitter(chunk_size=300, chunk_overlap=30, add_start_index=True)
    expected = plain.split_documents([doc])
    assert [(c.page_content, c.metadata["start_index"]) for c in chunks] == [
        (c.page_content, c.metadata["start_index"]) for c in expected
    ]
    assert all("headings" not in c.metadata for c in chunks)
    pdf = load_file(documents_dir / "pypdf_sample_files" / "pdflatex-outline.pdf")
    assert all("headings" not in c.metadata for c in split_documents(pdf))


def test_html_headings_survive_loading(documents_dir: Path) -> None:
    (doc,) = load_file(documents_dir / UNSTRUCTURED / "fake-html.html")
    assert doc.page_content.startswith("# My First Heading\n\n## My Second Heading\n\nMy first paragraph.")
    assert "\n\n### A Third Heading\n\n" in doc.page_content
    chunks = split_documents([doc], chunk_size=200, chunk_overlap=0)
    assert_offsets([doc], chunks)
    assert headings_of(chunks, "My first paragraph") == "My First Heading > My Second Heading"
    assert headings_of(chunks, "Row 2, Cell 2") == "My First Heading > My Second Heading > A Third Heading"


def test_html_code_blocks_are_fenced_and_templates_stay_out() -> None:
    html = (
        "<title> Deploy\n guide </title><h1>Deploy</h1><pre># install first\npip install x</pre>"
        "<p>Then ``` start it.</p><h2>Run <em>it</em></h2><p>railgraph serve</p>"
        "<template><h2>Hidden</h2></template>"
    )
    title, text = html_to_text(html)
    assert title == "Deploy guide"
    assert "```\n# install first\npip install x\n```" in text
    assert "Hidden" not in text
    doc = Document(page_content=text, metadata={"source": "deploy.html", "type": "html"})
    chunks = split_documents([doc], chunk_size=60, chunk_overlap=0)
    assert headings_of(chunks, "pip install x") == "Deploy"  # "# install first" is code
    assert headings_of(chunks, "railgraph serve") == "Deploy > Run it"


def test_real_markdown_document(documents_dir: Path) -> None:
    """codeblock.md: two sections, each full of code that must not open sections of its own."""
    docs = load_file(documents_dir / UNSTRUCTURED / "codeblock.md")
    chunks = split_documents(docs, chunk_size=200, chunk_overlap=0)
    assert_offsets(docs, chunks)
    assert {c.metadata["headings"] for c in chunks} == {"HTML Example", "XML Example"}
    assert headings_of(chunks, "<h1>Hello, World!</h1>") == "HTML Example"
    assert all(c.metadata["headings"] == "XML Example" for c in chunks if "<note>" in c.page_content)


@pytest.mark.parametrize(
    ("name", "needle", "expected"),
    [
        (
            "example-with-scripts.html",
            "Belarusian forces remain unlikely",
            "Russian Offensive Campaign Assessment, December 13",
        ),
        ("example-with-scripts.html", "Who We Are", "Search form"),
        (
            "example-steelJIS-datasheet.html",
            "Alloy steel bars for special application bolting materials",
            "SteelJIS: Japanese Steels and Alloys > SNB22-3 Chemical composition, standards and properties",
        ),
    ],
)
def test_real_html_pages(documents_dir: Path, name: str, needle: str, expected: str) -> None:
    docs = load_file(documents_dir / UNSTRUCTURED / name)
    chunks = split_documents(docs)
    assert_offsets(docs, chunks)
    assert [c.metadata["headings"] for c in chunks if needle in c.page_content][:1] == [expected]
    assert chunks[0].metadata["headings"] is None  # the page's text before its first heading


def test_headings_join_the_title_in_the_embedded_text(tmp_path: Path) -> None:
    """Two chunks with the same words under different headings: the headings decide which one a question finds."""
    assert (
        embedded_text("Run it.", {"title": "README.md", "headings": "Install > Source"})
        == "README.md > Install > Source\nRun it."
    )
    assert embedded_text("Run it.", {"title": None, "headings": "Install"}) == "Install\nRun it."
    assert embedded_text("Run it.", {"title": "Setup guide"}) == "Setup guide\nRun it."
    # A file name standing in for a missing title names the file, not the text: only headings remain.
    named = {"title": "mw-12.txt", "source": "/data/mw-12.txt", "headings": "Install"}
    assert embedded_text("Run it.", named) == "Install\nRun it."
    assert embedded_text("Run it.", named | {"headings": None}) == "Run it."
    text = "Run the command below, then restart the service."
    store = ChunkStore(
        Database(tmp_path / "chunks.db"),
        default_embeddings(),
        SearchOptions(duplicate_similarity=1.0, relevance_floor=0.0),
    )
    store.add_texts(
        [text, text],
        [
            {"source": "README.md", "doc_id": "install", "title": "README.md", "headings": "Install > From source"},
            {"source": "README.md", "doc_id": "remove", "title": "README.md", "headings": "Uninstall"},
        ],
    )
    for question, expected in [("How do I uninstall it?", "remove"), ("How do I install it from source?", "install")]:
        best, _ = store.search(question, 2, mode="vector")[0]
        assert best.metadata["doc_id"] == expected
