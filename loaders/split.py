"""Loaded Documents into chunks that remember where in their page or document they came from.

Markdown and HTML documents are first cut into sections at their headings (HTML headings reach the text as
Markdown heading lines, see ``loaders.files.html_to_text``), so that a chunk never spans two sections and knows
the heading path it sits under; every section, and every other document, is then split by LangChain's recursive
character splitter. The sections are found by a small line scanner rather than LangChain's
``MarkdownHeaderTextSplitter``, which rebuilds each section's text line by line and so loses the character
offsets that every chunk keeps.
"""

from __future__ import annotations

import re
from collections import Counter

from langchain_core.documents import Document
from langchain_text_splitters import RecursiveCharacterTextSplitter

__all__ = ["split_documents"]

# Document types cut at headings, and whether a setext heading (a line underlined with === or ---) counts: only in
# Markdown itself; HTML headings arrive as ATX lines, and a dashed line in page text is not a heading.
_SETEXT_BY_TYPE = {"md": True, "markdown": True, "html": False, "htm": False}
_HEADING_SEPARATOR = " > "

# CommonMark's rules, kept to what changes where sections start: up to three spaces of indent (four make code), an
# ATX heading needs a space after its 1-6 '#', and its optional closing '#'s need one before them.
_LINE = re.compile(r"^.*$", re.MULTILINE)
_ATX = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})(.*)")
_SETEXT_UNDERLINE = re.compile(r" {0,3}(=+|-+)[ \t]*")
# A line that opens a list item or a block quote is not a setext heading's text: "- item" over "---" is a list
# followed by a rule.
_NOT_SETEXT_TEXT = re.compile(r" {0,3}(?:[-*+>]|\d{1,9}[.)])(?:[ \t]|$)| {4}")


def _heading_starts(text: str, *, setext: bool) -> list[tuple[int, int, str]]:
    """Each heading outside fenced code as ``(start, end, path)``: where its line(s) start and end, and its path.

    The path joins the texts of the heading and of the headings it sits under, "Install > From source".
    """
    headings: list[tuple[int, int, str]] = []
    open_headings: list[tuple[int, str]] = []  # (level, text) from the top level down to the latest heading
    fence: str | None = None  # the opening fence's run of ` or ~ while inside fenced code
    # The previous line, when it may be a setext heading's text: a non-blank line after a blank one.
    paragraph: tuple[int, str] | None = None
    previous_blank = True
    for match in _LINE.finditer(text):
        line = match.group().rstrip("\r")
        found: tuple[int, int, str] | None = None  # (start, level, heading text)
        if fence is not None:
            # A closing fence is a run of the opening character at least as long, with nothing after it.
            closing = _FENCE.fullmatch(line)
            if closing and closing.group(1).startswith(fence) and not closing.group(2).strip():
                fence = None
        elif opening := _FENCE.fullmatch(line):
            # An info string after backticks may not hold a backtick (CommonMark), else it is inline code.
            if opening.group(1)[0] == "~" or "`" not in opening.group(2):
                fence = opening.group(1)
        elif atx := _ATX.fullmatch(line):
            found = (match.start(), len(atx.group(1)), atx.group(2) or "")
        elif setext and paragraph is not None and (underline := _SETEXT_UNDERLINE.fullmatch(line)):
            found = (paragraph[0], 1 if underline.group(1)[0] == "=" else 2, paragraph[1])
        blank = not line.strip()
        can_be_setext_text = (
            fence is None and found is None and not blank and previous_blank and not _NOT_SETEXT_TEXT.match(line)
        )
        paragraph = (match.start(), line) if can_be_setext_text else None
        previous_blank = blank
        if found is None:
            continue
        start, level, heading = found
        heading = " ".join(heading.split())
        if not heading:  # an empty heading ("#") names nothing to file a chunk under
            continue
        while open_headings and open_headings[-1][0] >= level:
            open_headings.pop()
        open_headings.append((level, heading))
        headings.append((start, match.end(), _HEADING_SEPARATOR.join(text for _, text in open_headings)))
    return headings


def _sections(text: str, *, setext: bool) -> list[tuple[int, int, str | None]]:
    """The text cut at its headings, as ``(start, end, headings)``; text before the first heading has None.

    A heading with nothing under it before the next one (a "# Guide" right above "## Install") stays with the
    next section rather than becoming a chunk of its own heading line.
    """
    starts: list[tuple[int, int, str | None]] = [(0, 0, None), *_heading_starts(text, setext=setext)]
    ends = [start for start, _, _ in starts[1:]] + [len(text)]
    sections: list[tuple[int, int, str | None]] = []
    carried: int | None = None  # start of the empty sections waiting for the next one
    for (start, body, headings), end in zip(starts, ends, strict=True):
        begin = start if carried is None else carried
        if end < len(text) and not text[body:end].strip():
            carried = begin
            continue
        carried = None
        sections.append((begin, end, headings))
    return sections


def _split(doc: Document, splitter: RecursiveCharacterTextSplitter) -> list[Document]:
    """One Document's chunks: its sections', each with ``headings``, where its type has headings."""
    setext = _SETEXT_BY_TYPE.get(str(doc.metadata.get("type", "")).lower())
    if setext is None:
        return splitter.split_documents([doc])
    text = doc.page_content
    chunks: list[Document] = []
    for start, end, headings in _sections(text, setext=setext):
        for chunk in splitter.create_documents([text[start:end]], [{**doc.metadata, "headings": headings}]):
            chunk.metadata["start_index"] += start
            chunks.append(chunk)
    return chunks


def split_documents(docs: list[Document], *, chunk_size: int = 1000, chunk_overlap: int = 150) -> list[Document]:
    """Split Documents into chunks of at most ``chunk_size`` characters, ``chunk_overlap`` shared.

    Each chunk keeps its parent's metadata and gains ``start_index`` and ``end_index`` (so that
    ``parent.page_content[start_index:end_index] == chunk.page_content``) and ``chunk``, its 0-based
    position among all chunks of its ``source`` (counted across pages, in the order given).
    Markdown (``type`` md, markdown) and HTML (html, htm) documents are split section by section, and their
    chunks gain ``headings``, the heading path they sit under ("Install > From source"; None before the
    first heading); chunks of other types have no ``headings``. Whitespace-only chunks are dropped.
    """
    splitter = RecursiveCharacterTextSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap, add_start_index=True)
    per_source: Counter[str] = Counter()
    chunks: list[Document] = []
    for doc in docs:
        for chunk in _split(doc, splitter):
            if not chunk.page_content.strip():
                continue
            source = str(chunk.metadata.get("source", ""))
            chunk.metadata["end_index"] = chunk.metadata["start_index"] + len(chunk.page_content)
            chunk.metadata["chunk"] = per_source[source]
            per_source[source] += 1
            chunks.append(chunk)
    return chunks
