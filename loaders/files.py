"""One file in, LangChain Documents out: file type -> loader, encoding detection, clear errors.

Every file type is one entry of ``_LOADERS`` below. ``load_file`` does the checks that every type
shares (exists, size, readable), builds the loader, and turns whatever goes wrong into a
``LoadError`` that says which file, what is wrong and what to do, so that one bad document never
stops an ingest of many.
"""

from __future__ import annotations

import codecs
import csv
import email
import hashlib
import json
import logging
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator
from datetime import date, datetime, time
from email import policy
from functools import partial
from pathlib import Path
from typing import Any

import chardet
import jq
from bs4 import BeautifulSoup, NavigableString
from ftfy import fix_encoding
from langchain_community.document_loaders import (
    CSVLoader,
    Docx2txtLoader,
    JSONLoader,
    PyPDFLoader,
    TextLoader,
)
from langchain_core.document_loaders import BaseLoader
from langchain_core.documents import Document
from pypdf.errors import DependencyError, FileNotDecryptedError, PyPdfError, WrongPasswordError
from striprtf.striprtf import rtf_to_text

__all__ = ["SUPPORTED_SUFFIXES", "LoadError", "document_id", "fields_text", "html_to_text", "load_file"]

# pypdf logs font and cross-reference warnings for files it reads correctly; on stderr they would bury
# the ingest's own one-line messages about files that really failed.
logging.getLogger("pypdf").setLevel(logging.ERROR)

_MiB = 1024**2
# Encoding and delimiter detection look at the start of the file only: enough to decide, and
# chardet is slow on large inputs.
_SNIFF_BYTES = 64 * 1024
# A decoded "text" with more control characters than this share is a binary file that some
# single-byte codec happened to accept.
_MAX_CONTROL_SHARE = 0.02
# The control characters (Unicode category Cc: U+0000-001F, U+007F-009F) that real text files do not contain; tabs,
# line breaks, form feeds and ESC (ANSI colours) are left out. One regex scan: a loop over characters cost 70 us a file.
_BINARY_CONTROLS = re.compile("[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f-\x9f]")
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.IGNORECASE)
# Metadata that loaders add and that is worth keeping beside the five common keys.
_KEPT_LOADER_METADATA = (
    *("row", "total_pages", "page_label"),  # CSV, PDF
    *("sheet", "seq_num", "chapter"),  # XLSX, JSON (1-based count of the file's values), EPUB
    *("from", "to", "date", "attachments"),  # EML
)


class LoadError(Exception):
    """One file could not be read.

    ``str(err)`` is one line, ``f"{source}: {reason}. {hint}"``: which file, what is wrong, what to do.
    """

    def __init__(self, source: str, reason: str, hint: str) -> None:
        self.source = source
        # Loader messages can span lines or end in a period; the error must read as one sentence.
        self.reason = " ".join(reason.split()).rstrip(".")
        self.hint = " ".join(hint.split())
        super().__init__(f"{self.source}: {self.reason}. {self.hint}")

    def __reduce__(self) -> tuple[type[LoadError], tuple[str, str, str]]:
        # Rebuild from the three fields, so the error survives pickling (a worker process's result).
        return (type(self), (self.source, self.reason, self.hint))


def _resolved(path: Path) -> Path:
    """Absolute, symlink-free path; a symlink loop keeps the absolute path so the error can name it."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path.absolute()


# A source that starts with a URL scheme (a web page, a database row) is an id already, not a path to resolve.
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def document_id(source: str) -> str:
    """Stable id of a source: the first 16 hex digits of the SHA-256 of its resolved path string.

    The path is resolved first, so ``docs/a.pdf``, ``./docs/a.pdf`` and its absolute form share an id. A
    source with a URL scheme (``https://...``, ``sqlite:///...``) is hashed as it is.
    """
    return _hashed_id(source if _URL_SCHEME.match(source) else str(_resolved(Path(source))))


def _hashed_id(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


# --- text decoding, shared by the text-based types ---------------------------------------------


def _detect_encoding(raw: bytes, *, html: bool) -> str | None:
    """The codec that decodes ``raw``, or None when it does not look like text in any encoding."""
    # A byte-order mark is certain; UTF-32 goes first because its little-endian BOM starts like UTF-16's.
    if raw.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if raw.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "utf-32"
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    candidates: list[str] = []
    # NUL bytes are valid UTF-8, but text with them is UTF-16/32 without a BOM, or binary.
    if b"\x00" not in raw:
        candidates.append("utf-8")
    # A page's declared charset comes next; it is often wrong, so it must decode the bytes to count.
    if html and (declared := _META_CHARSET.search(raw[:_SNIFF_BYTES])):
        candidates.append(declared.group(1).decode("ascii"))
    for candidate in candidates:
        try:
            raw.decode(candidate)
        except (UnicodeDecodeError, LookupError):
            continue
        return codecs.lookup(candidate).name
    guess = chardet.detect(raw[:_SNIFF_BYTES])["encoding"]
    if guess is None:
        return None
    try:
        return codecs.lookup(guess).name
    except LookupError:
        return None


def _looks_binary(text: str) -> bool:
    """True when decoded text is full of control characters, as binary data decoded by luck is."""
    sample = text[:_SNIFF_BYTES]
    if "\x00" in sample:
        return True
    return len(_BINARY_CONTROLS.findall(sample)) > _MAX_CONTROL_SHARE * len(sample)


def _text_encoding(path: Path, *, html: bool = False) -> str:
    """Encoding for the loader to open ``path`` (resolved by ``load_file``) with, after checking that the file really
    is text."""
    raw = path.read_bytes()
    source = str(path)
    encoding = _detect_encoding(raw, html=html)
    if encoding is None:
        raise LoadError(
            source,
            "cannot detect a text encoding; the content looks binary, not text",
            f"check that it really is a {path.suffix} file, or convert it to UTF-8 text",
        )
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise LoadError(
            source, f"the text cannot be decoded as {encoding} ({exc})", "convert the file to UTF-8"
        ) from exc
    if _looks_binary(text):
        raise LoadError(
            source,
            f"the content looks binary, not text (decoded as {encoding} it is mostly control characters)",
            f"check that it really is a {path.suffix} file, or convert it to UTF-8 text",
        )
    return encoding


def _csv_delimiter(path: Path, encoding: str) -> str:
    """The delimiter of a CSV/TSV file: sniffed from its first lines, else the most frequent candidate."""
    default = "\t" if path.suffix.lower() == ".tsv" else ","
    with path.open(encoding=encoding, newline="") as f:
        sample = f.read(_SNIFF_BYTES)
    # The sniffer wants whole lines; a line cut in half makes it give up.
    whole_lines = sample[: sample.rfind("\n") + 1] or sample
    try:
        return csv.Sniffer().sniff(whole_lines, delimiters=",;\t|").delimiter
    except csv.Error:
        # One line longer than the sample, or a single column: count candidates in the header.
        header = sample.split("\n", 1)[0]
        counts = {d: header.count(d) for d in (default, ",", ";", "\t", "|")}
        best = max(counts, key=lambda d: counts[d])
        return best if counts[best] else default


# --- one entry per file type -------------------------------------------------------------------

_LoaderFactory = Callable[[Path, str | None], BaseLoader]

# html.parser because lxml is not a dependency. bs4 leaves <script>, <style> and <template>
# content out of get_text(), so code and CSS never reach the index.
_BS_KWARGS: dict[str, Any] = {"features": "html.parser"}


def _csv_loader(path: Path, _password: str | None) -> BaseLoader:
    """CSVLoader with the detected encoding and delimiter; short rows give "" rather than "None"."""
    encoding = _text_encoding(path)
    csv_args = {"delimiter": _csv_delimiter(path, encoding), "restval": ""}
    return CSVLoader(path, encoding=encoding, csv_args=csv_args)


_HTML_HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")
_BACKTICK_RUNS = re.compile(r"`+")
# Elements that end a line of text (headings and <pre> get lines of their own anyway).
_HTML_BLOCKS = [
    *("address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption", "figure"),
    *("footer", "header", "hr", "li", "main", "nav", "ol", "p"),
    *("section", "table", "td", "th", "tr", "ul"),
]


def html_to_text(html: str | bytes) -> tuple[str, str]:
    """An HTML page as ``(title, text)``: its ``<title>`` ("" without one) and its visible text.

    Headings h1-h6 become Markdown heading lines ("## Heading") and ``<pre>`` blocks are fenced with backticks,
    so that ``split_documents`` cuts the page at its headings and never takes a "# comment" in code for one.
    Block elements (paragraphs, list items, table cells, divs) end a line, so ``<div>a</div><div>b</div>``
    reads as two lines, not "ab". Script, style and template content is left out and blank-line runs are
    collapsed. HTML files, crawled pages (``loaders.web``), HTML e-mail bodies and EPUB chapters all become
    text here.
    """
    return _soup_text(BeautifulSoup(html, **_BS_KWARGS))


def _soup_text(soup: BeautifulSoup) -> tuple[str, str]:
    """``html_to_text`` of an already parsed page."""
    title = " ".join(soup.title.get_text().split()) if soup.title else ""
    for tag in soup.find_all(["pre", *_HTML_HEADINGS]):
        # get_text() leaves <template> content out; the plain strings added here would bring it back in.
        if tag.find_parent("template") is not None:
            continue
        if tag.name == "pre":
            longest = max((len(run) for run in _BACKTICK_RUNS.findall(tag.get_text())), default=0)
            fence = "`" * max(3, longest + 1)
            tag.insert_before(NavigableString(f"\n{fence}\n"))
            tag.insert_after(NavigableString(f"\n{fence}\n"))
        else:
            heading = " ".join(tag.get_text().split())
            tag.replace_with(NavigableString(f"\n\n{'#' * int(tag.name[1])} {heading}\n\n" if heading else "\n\n"))
    for tag in soup.find_all(_HTML_BLOCKS):
        if tag.find_parent("template") is None:
            tag.insert_before(NavigableString("\n"))
            tag.insert_after(NavigableString("\n"))
    return title, _tidy(soup.get_text())


class _HtmlLoader(BaseLoader):
    """An HTML file as one Document: the text and ``title`` of ``html_to_text``."""

    def __init__(self, path: Path, encoding: str) -> None:
        self.path = path
        self.encoding = encoding

    def lazy_load(self) -> Iterator[Document]:
        title, text = html_to_text(self.path.read_text(encoding=self.encoding))
        yield Document(page_content=text, metadata={"source": str(self.path), "title": title})


def _html_loader(path: Path, _password: str | None) -> BaseLoader:
    return _HtmlLoader(path, _text_encoding(path, html=True))


def _text_loader(path: Path, _password: str | None) -> BaseLoader:
    return TextLoader(path, encoding=_text_encoding(path))


# jq that turns each selected value into text: an object as "key: value" lines (as CSV rows read), nested values
# as compact JSON, null as nothing (so it is dropped as blank).
_JSON_AS_TEXT = """
def text: if type == "string" then . elif . == null then "" else tojson end;
(SELECTOR) | if type == "object" then [to_entries[] | "\\(.key): \\(.value | text)"] | join("\\n") else text end
"""
_JSON_SUFFIXES = frozenset({".json", ".jsonl"})


def _json_loader(path: Path, _password: str | None, selector: str | None = None) -> BaseLoader:
    """JSONLoader over a jq program: the values ``selector`` picks, each rendered as readable text.

    Without a selector a .json file gives one value per element of a top-level array (else the whole
    value) and a .jsonl file one value per line.
    """
    json_lines = path.suffix.lower() == ".jsonl"
    if selector is not None:
        try:
            jq.compile(selector)
        except ValueError as exc:
            raise LoadError(
                str(path), f"invalid JSON selector {selector!r} ({exc})", "write it in jq syntax, e.g. '.items[].body'"
            ) from exc
    default = "." if json_lines else 'if type == "array" then .[] else . end'
    return JSONLoader(path, jq_schema=_JSON_AS_TEXT.replace("SELECTOR", selector or default), json_lines=json_lines)


# langchain_community's loaders for the types below are Unstructured*Loader (UnstructuredExcelLoader,
# UnstructuredPowerPointLoader, UnstructuredEmailLoader, UnstructuredEPubLoader, UnstructuredRTFLoader,
# UnstructuredODTLoader). `unstructured` does install here (about 900 MB with spaCy), but its partitioners
# download the spaCy model en_core_web_sm from GitHub on first use, so none of them runs offline. These small
# BaseLoaders use pure-Python libraries instead, imported when first used: together they would add about half
# a second to every command that imports loaders.


def _require_zip(path: Path) -> None:
    """XLSX, PPTX, EPUB and ODT files are ZIP archives; say so plainly rather than in each library's words."""
    if not zipfile.is_zipfile(path):
        raise zipfile.BadZipFile("File is not a zip file")


def _cell_text(value: object) -> str:
    """A spreadsheet cell as it reads: whole numbers without ".0", dates without a midnight time."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == time() else value.isoformat(sep=" ")
    if isinstance(value, date | time):
        return value.isoformat()
    return str(value).strip()


def fields_text(fields: Iterable[tuple[str, str]]) -> str:
    """Named values as "name: value" lines, the form CSV rows take, so that tables of any source read alike."""
    return "\n".join(f"{name}: {value}" for name, value in fields)


def _sheet_text(rows: list[list[str]]) -> str:
    """A sheet's non-empty rows as text: the title rows, then each row under the header as "column: value" lines.

    The header is the first row with two or more values (the first row of a one-column sheet); the one-value
    rows above it are titles. Empty cells are left out: sheets are often wide and sparse, and "column: " lines
    would bury the values.
    """
    at = next((i for i, row in enumerate(rows) if sum(1 for cell in row if cell) > 1), 0)
    if at == len(rows) - 1:  # nothing under the header: the cells are the text
        return "\n".join(" ".join(cell for cell in row if cell) for row in rows)
    from openpyxl.utils import get_column_letter

    header = rows[at]
    names = [(header[i] if i < len(header) else "") or get_column_letter(i + 1) for i in range(max(map(len, rows)))]
    titles = [" ".join(cell for cell in row if cell) for row in rows[:at]]
    records = [fields_text((names[i], cell) for i, cell in enumerate(row) if cell) for row in rows[at + 1 :]]
    return "\n\n".join(titles + records)


class _XlsxLoader(BaseLoader):
    """A Document per worksheet (metadata ``sheet``), its rows as "column: value" lines (openpyxl)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def lazy_load(self) -> Iterator[Document]:
        import openpyxl

        _require_zip(self.path)
        # data_only: a formula cell gives the value Excel last computed, not the formula.
        workbook = openpyxl.load_workbook(self.path, read_only=True, data_only=True)
        try:
            for sheet in workbook.worksheets:
                rows = [cells for row in sheet.iter_rows(values_only=True) if any(cells := list(map(_cell_text, row)))]
                if rows:
                    yield Document(page_content=_sheet_text(rows), metadata={"sheet": sheet.title})
        finally:
            workbook.close()


def _shape_texts(shape: Any) -> Iterator[str]:
    """Text of a slide shape: text frames, tables (a row a line, cells " | " apart) and shapes inside groups."""
    from pptx.shapes.group import GroupShape

    if isinstance(shape, GroupShape):
        for inner in shape.shapes:
            yield from _shape_texts(inner)
    elif shape.has_text_frame:
        yield shape.text_frame.text
    elif shape.has_table:
        yield "\n".join(" | ".join(cell.text for cell in row.cells) for row in shape.table.rows)


class _PptxLoader(BaseLoader):
    """A Document per slide, ``page`` its 1-based number: the text of all its shapes, then its notes (python-pptx)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def lazy_load(self) -> Iterator[Document]:
        from pptx import Presentation

        _require_zip(self.path)
        for number, slide in enumerate(Presentation(str(self.path)).slides, 1):
            texts = [text for shape in slide.shapes for text in _shape_texts(shape)]
            if slide.has_notes_slide and (notes := slide.notes_slide.notes_text_frame) is not None:
                texts.append(notes.text)
            # python-pptx gives a line break inside a paragraph as a vertical tab.
            text = "\n\n".join(text for text in texts if text.strip()).replace("\v", "\n")
            yield Document(page_content=text, metadata={"page": number})


# Elements that start a line: get_text() alone runs "<div>one</div><div>two</div>" together as "onetwo", and
# e-mail HTML is written without line breaks between them.


class _EmlLoader(BaseLoader):
    """The plain-text body of an e-mail (an HTML-only body as text); subject, From, To, Date, attachment names.

    Attachments are named in metadata, not loaded. Standard library ``email`` with the modern policy.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def lazy_load(self) -> Iterator[Document]:
        with self.path.open("rb") as f:
            message = email.message_from_binary_file(f, policy=policy.default)
        if not any(message[name] for name in ("From", "To", "Subject", "Date")):
            raise LoadError(
                str(self.path),
                "not an e-mail: no From, To, Subject or Date header",
                "check that it really is a .eml (RFC 822) message",
            )
        body = message.get_body(preferencelist=("plain", "html"))
        text = "" if body is None else body.get_content()
        if body is not None and body.get_content_type() == "text/html":
            text = html_to_text(text)[1]
        sent = message["Date"]
        yield Document(
            page_content=text,
            metadata={
                "title": str(message["Subject"] or ""),
                "from": str(message["From"] or ""),
                "to": str(message["To"] or ""),
                "date": sent.datetime.isoformat() if getattr(sent, "datetime", None) else str(sent or ""),
                "attachments": [part.get_filename() or part.get_content_type() for part in message.iter_attachments()],
            },
        )


def _toc_titles(entries: Iterable[Any], titles: dict[str, str] | None = None) -> dict[str, str]:
    """File name -> the title of the first table-of-contents entry (depth first) that points into it."""
    titles = {} if titles is None else titles
    for entry in entries:
        link, children = entry if isinstance(entry, tuple) else (entry, ())
        if link.href:
            titles.setdefault(link.href.split("#", 1)[0], " ".join(link.title.split()))
        _toc_titles(children, titles)
    return titles


class _EpubLoader(BaseLoader):
    """A Document per spine document, in reading order (metadata ``chapter``, 1-based), titled by the book and
    the chapter's table-of-contents entry, else its first heading (ebooklib)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def lazy_load(self) -> Iterator[Document]:
        import ebooklib
        from ebooklib import epub

        _require_zip(self.path)
        book = epub.read_epub(str(self.path))
        book_title = " ".join(next((title for title, _ in book.get_metadata("DC", "title")), "").split())
        toc = _toc_titles(book.toc)
        for number, (item_id, _linear) in enumerate(book.spine, 1):
            item = book.get_item_with_id(item_id)
            if item is None or item.get_type() != ebooklib.ITEM_DOCUMENT:
                continue
            soup = BeautifulSoup(item.get_content(), **_BS_KWARGS)
            heading = soup.find(["h1", "h2", "h3"])
            chapter = toc.get(item.get_name()) or (" ".join(heading.get_text().split()) if heading else "")
            text = _soup_text(soup)[1]
            title = f"{book_title}: {chapter}" if book_title and chapter and book_title not in chapter else ""
            yield Document(
                page_content=text,
                metadata={"title": title or chapter or book_title, "chapter": number},
            )


# Escaped braces and backslashes, which are text rather than RTF groups.
_RTF_BRACES = re.compile(r"\\[\\{}]")


class _RtfLoader(BaseLoader):
    """The text of an RTF file (striprtf); the code page it declares decodes its escaped characters."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def lazy_load(self) -> Iterator[Document]:
        rtf = self.path.read_text(encoding=_text_encoding(self.path))
        if not rtf.lstrip().startswith("{\\rtf"):
            raise LoadError(
                str(self.path),
                "not an RTF file: it does not start with {\\rtf",
                "check that it really is RTF, or give it the suffix of what it is",
            )
        # striprtf reads what there is of a cut-off file without complaint; its open groups give it away.
        groups = _RTF_BRACES.sub("", rtf)
        unclosed = groups.count("{") - groups.count("}")
        if unclosed > 0:
            raise LoadError(
                str(self.path),
                f"the RTF is cut short: {unclosed} group(s) are not closed",
                "the file is damaged or truncated; re-save it from a word processor",
            )
        yield Document(page_content=rtf_to_text(rtf, errors="replace"))


def _odf_lines(element: Any) -> Iterator[str]:
    """Lines of an OpenDocument body in document order: a paragraph or heading a line, a table row a line."""
    from odf import teletype
    from odf.namespaces import TABLENS, TEXTNS

    for node in element.childNodes:
        if node.nodeType != node.ELEMENT_NODE:
            continue
        if node.qname in ((TEXTNS, "p"), (TEXTNS, "h")):
            yield teletype.extractText(node)
        elif node.qname == (TABLENS, "table-row"):
            cells = (cell for cell in node.childNodes if cell.qname == (TABLENS, "table-cell"))
            yield " | ".join(" ".join(_odf_lines(cell)) for cell in cells)
        else:
            yield from _odf_lines(node)


class _OdtLoader(BaseLoader):
    """The text of an OpenDocument text file: paragraphs, headings, lists and tables (odfpy)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def lazy_load(self) -> Iterator[Document]:
        from odf.opendocument import load

        _require_zip(self.path)
        yield Document(page_content="\n".join(_odf_lines(load(str(self.path)).text)))


_LOADERS: dict[str, _LoaderFactory] = {
    ".txt": _text_loader,  # TextLoader, encoding detected (BOM, UTF-8, then chardet)
    # TextLoader: Markdown kept as plain text (UnstructuredMarkdownLoader needs `unstructured`)
    ".md": _text_loader,
    ".markdown": _text_loader,  # TextLoader, as .md
    ".pdf": lambda path, password: PyPDFLoader(path, password=password),  # PyPDFLoader: a Document per page
    ".html": _html_loader,  # html_to_text (bs4): visible text, headings as "## " lines, <title>; encoding detected
    ".htm": _html_loader,  # as .html
    ".csv": _csv_loader,  # CSVLoader: a Document per row, "column: value" lines
    ".tsv": _csv_loader,  # CSVLoader, as .csv (the sniffer finds the tabs)
    ".docx": lambda path, _password: Docx2txtLoader(path),  # Docx2txtLoader: body, tables, headers
    ".json": _json_loader,  # JSONLoader (jq): a Document per top-level array element, or the selected values
    ".jsonl": _json_loader,  # JSONLoader (jq, json_lines): a Document per line, or the selected values
    # No LangChain loader runs here for these (see above); their own loaders, each on a pure-Python library.
    ".xlsx": lambda path, _password: _XlsxLoader(path),  # openpyxl: a Document per sheet
    ".pptx": lambda path, _password: _PptxLoader(path),  # python-pptx: a Document per slide
    ".eml": lambda path, _password: _EmlLoader(path),  # stdlib email: the body; headers in metadata
    ".epub": lambda path, _password: _EpubLoader(path),  # ebooklib: a Document per chapter
    ".rtf": lambda path, _password: _RtfLoader(path),  # striprtf
    ".odt": lambda path, _password: _OdtLoader(path),  # odfpy
}

SUPPORTED_SUFFIXES: frozenset[str] = frozenset(_LOADERS)
"""File suffixes (lower case, with the dot) that ``load_file`` reads."""

# Text pulled out of markup (HTML, DOCX, ...) carries the markup's layout as runs of blank lines.
_MARKUP_TYPES = frozenset({"html", "htm", "docx", "pptx", "eml", "epub", "rtf", "odt"})
# Types whose loader gives each Document a title (HTML <title>, e-mail subject, EPUB book and chapter).
_TITLED_TYPES = frozenset({"html", "htm", "eml", "epub"})
_BLANK_RUNS = re.compile(r"\n[ \t\xa0]*(?:\n[ \t\xa0]*)+")
_TRAILING_SPACE = re.compile(r"[ \t\xa0]+\n")


def _tidy(text: str) -> str:
    """Collapse the blank-line runs that markup leaves behind, so chunks hold text rather than space."""
    return _BLANK_RUNS.sub("\n\n", _TRAILING_SPACE.sub("\n", text)).strip()


def _is_blank_csv_row(content: str) -> bool:
    """True for a row with no values: CSVLoader writes each cell as "column: value", value stripped."""
    return all(line.endswith(": ") for line in content.split("\n"))


# --- errors ------------------------------------------------------------------------------------


def _sizes(size: int, limit: int) -> tuple[str, str]:
    """Size and limit in the limit's unit, so that the two read side by side."""
    if limit < 1024:
        return f"{size} bytes", f"{limit} bytes"
    unit, scale = ("KiB", 1024) if limit < _MiB else ("MiB", _MiB)
    return f"{size / scale:.1f} {unit}", f"{limit / scale:.1f} {unit}"


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost exception: CSVLoader, for one, wraps the real error in "Error loading <path>"."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


# The ZIP-based types (and RTF): what to re-save a damaged file from.
_SAVED_BY = {
    ".docx": "Word or LibreOffice",
    ".xlsx": "Excel or LibreOffice Calc",
    ".pptx": "PowerPoint or LibreOffice Impress",
    ".odt": "LibreOffice Writer",
    ".rtf": "a word processor",
    ".epub": "an e-book editor such as Calibre",
}


def _explain(exc: Exception, source: str, suffix: str) -> LoadError:
    """Turn an exception raised by a loader into a LoadError with a specific reason and hint."""
    root = _root_cause(exc)
    detail = f"{type(root).__name__}: {root}"
    if isinstance(root, WrongPasswordError):
        return LoadError(source, f"wrong PDF password ({detail})", "check the value given with --pdf-password")
    if isinstance(root, FileNotDecryptedError):
        return LoadError(
            source, "the PDF is encrypted and no password was given", "pass --pdf-password with its password"
        )
    if isinstance(root, DependencyError):
        return LoadError(
            source,
            f"the PDF is encrypted with AES, which needs an extra package ({detail})",
            "install it with `pip install cryptography`",
        )
    if suffix == ".pdf":
        return LoadError(source, f"cannot parse the PDF ({detail})", "the file is damaged; re-export it")
    if suffix in _SAVED_BY:
        return LoadError(
            source,
            f"cannot read the {suffix[1:].upper()} ({detail})",
            f"the file is damaged or not a real {suffix}; re-save it from {_SAVED_BY[suffix]}",
        )
    if suffix in _JSON_SUFFIXES:
        return _explain_json(root, source, suffix)
    return LoadError(source, f"the loader failed ({detail})", "check the file's contents or re-save it")


def _explain_json(root: BaseException, source: str, suffix: str) -> LoadError:
    """A JSON file that did not parse (naming the line, for JSON Lines), was not UTF-8, or defeated the selector."""
    if isinstance(root, json.JSONDecodeError):
        if suffix == ".jsonl" and (bad := _bad_json_line(Path(source))) is not None:
            number, error = bad
            return LoadError(
                source,
                f"invalid JSON on line {number} ({error.msg} at column {error.colno})",
                "fix or remove that line: each line of a .jsonl file must be one complete JSON value",
            )
        return LoadError(
            source,
            f"invalid JSON ({root.msg} at line {root.lineno} column {root.colno})",
            "fix the syntax (`python -m json.tool FILE` shows where); one JSON value per line belongs in a .jsonl file",
        )
    if isinstance(root, UnicodeDecodeError):
        return LoadError(source, f"the file is not UTF-8 text ({root})", "JSON must be UTF-8: re-save it as UTF-8")
    # jq's own errors at run time: the selector met a value of another shape than it expects.
    return LoadError(
        source,
        f"the JSON selector failed ({type(root).__name__}: {root})",
        "check the selector against the file's structure, e.g. with `jq SELECTOR FILE`",
    )


def _bad_json_line(path: Path) -> tuple[int, json.JSONDecodeError] | None:
    """The first line of a JSON Lines file that is not valid JSON, with its 1-based number."""
    with path.open(encoding="utf-8-sig") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    json.loads(line)
                except json.JSONDecodeError as error:
                    return number, error
    return None


def _check_file(path: Path, source: str, max_bytes: int) -> None:
    """Checks shared by every type: the path is a readable, non-empty file within the size limit."""
    try:
        stat = path.stat()
        if path.is_dir():
            raise LoadError(source, "is a directory, not a file", "ingest the folder to load every file in it")
        if not path.is_file():
            raise LoadError(source, "is not a regular file", "give the path of a regular file")
        if stat.st_size == 0:
            raise LoadError(source, "empty file (0 bytes)", "add content to it or leave it out")
        if stat.st_size > max_bytes:
            size, limit = _sizes(stat.st_size, max_bytes)
            raise LoadError(
                source,
                f"file is {size}, over the {limit} limit",
                "split it into smaller files or raise the size limit (max_bytes)",
            )
        # Open it now: a permission problem then reads as such, not as a loader's failure.
        with path.open("rb"):
            pass
    except FileNotFoundError as exc:
        raise LoadError(source, "file not found", "check the path") from exc
    except PermissionError as exc:
        raise LoadError(source, "permission denied", "make the file readable (chmod a+r)") from exc
    except OSError as exc:
        raise LoadError(source, f"cannot read the file ({exc})", "check the path and the disk") from exc


def _run_loader(factory: _LoaderFactory, path: Path, password: str | None) -> list[Document]:
    """Build the loader and load; a PDF that fails with the password is tried again without one.

    One password is given for a whole ingest, but pypdf rejects it on a PDF that is not encrypted
    ("Not an encrypted file") and on one that has an owner password only (as copy-protected files
    do) although both open without it.
    """
    try:
        return factory(path, password).load()
    except PyPdfError as with_password:
        if password is None:
            raise
        try:
            return factory(path, None).load()
        except FileNotDecryptedError:
            # It does need a password, so the one given is wrong: report that, not the retry.
            raise with_password from None


# --- the entry point ---------------------------------------------------------------------------


def load_file(
    path: Path, *, pdf_password: str | None = None, json_selector: str | None = None, max_bytes: int = 100 * _MiB
) -> list[Document]:
    """Load one file into Documents: one per PDF page, PPTX slide, CSV row, XLSX sheet, EPUB chapter and
    JSON value, one for any other type.

    Each Document's metadata has ``source`` (resolved absolute path), ``doc_id``
    (``document_id(source)``), ``page`` (1-based PDF page or PPTX slide, else None), ``title`` (HTML
    ``<title>``, e-mail subject, EPUB book and chapter, else the file name) and ``type`` (suffix without
    the dot). Some types keep more: CSV ``row`` (0-based); PDF ``total_pages`` and ``page_label``; XLSX
    ``sheet``; JSON ``seq_num`` (1-based); EPUB ``chapter`` (1-based, spine order); EML ``from``, ``to``,
    ``date`` (ISO 8601) and ``attachments`` (their file names; attachments are not loaded). Empty pages,
    rows and values are dropped.

    ``pdf_password`` opens encrypted PDFs; a PDF that opens without it (owner password only) still
    opens when a wrong one is given, so one password can be passed for a whole folder.

    ``json_selector`` is a jq program (e.g. ``.items[].body``) that picks the values of a .json file, or of
    each line of a .jsonl file, to load, one Document each; without it a .json file gives each element of a
    top-level array (else the whole value) and a .jsonl file each line. An object reads as "key: value" lines.
    Other types ignore it.

    Raises:
        LoadError: for anything that keeps the file from giving text, never a loader's own exception.
    """
    resolved = _resolved(Path(path))
    source = str(resolved)
    suffix = resolved.suffix.lower()
    factory = _LOADERS.get(suffix)
    if factory is None:
        found = f"'{suffix}'" if suffix else "(no suffix)"
        raise LoadError(
            source,
            f"unsupported file type {found}",
            f"supported types are {', '.join(sorted(SUPPORTED_SUFFIXES))}; convert the file or leave it out",
        )
    if suffix in _JSON_SUFFIXES:
        # Bound here so that every entry of _LOADERS keeps the one (path, password) shape.
        factory = partial(_json_loader, selector=json_selector)
    _check_file(resolved, source, max_bytes)
    try:
        loaded = _run_loader(factory, resolved, pdf_password)
    except LoadError:
        raise
    except Exception as exc:
        raise _explain(exc, source, suffix) from exc

    if suffix == ".pdf" and not loaded:
        raise LoadError(source, "the PDF has no pages", "the file is damaged; re-export it")
    file_type = suffix.lstrip(".")
    doc_id = _hashed_id(source)  # ``document_id(source)``, the path being resolved already
    docs: list[Document] = []
    for doc in loaded:
        text = _tidy(doc.page_content) if file_type in _MARKUP_TYPES else doc.page_content
        # Text once encoded as UTF-8, read back as cp1252 or Latin-1 and saved as UTF-8 again ("2004â€“2005", as
        # in norwich-city.txt) would be searched, quoted and cited in that form; ftfy undoes such double encoding
        # and leaves text that is not mojibake as it is.
        text = fix_encoding(text)
        if not text.strip() or (file_type in {"csv", "tsv"} and _is_blank_csv_row(text)):
            continue
        title = (
            " ".join(fix_encoding(str(doc.metadata.get("title") or "")).split()) if file_type in _TITLED_TYPES else ""
        )
        metadata: dict[str, Any] = {
            "source": source,
            "doc_id": doc_id,
            # PyPDFLoader counts pages from 0; the PPTX loader numbers slides from 1.
            "page": int(doc.metadata["page"]) + 1 if file_type == "pdf" else doc.metadata.get("page"),
            "title": title or resolved.name,
            "type": file_type,
        }
        metadata.update({k: doc.metadata[k] for k in _KEPT_LOADER_METADATA if k in doc.metadata})
        docs.append(Document(page_content=text, metadata=metadata))
    if not docs:
        if file_type == "pdf":
            raise LoadError(
                source,
                f"no extractable text in its {len(loaded)} page(s)",
                "it is probably scanned images; run OCR first (e.g. ocrmypdf)",
            )
        if suffix in _JSON_SUFFIXES and json_selector is not None:
            raise LoadError(
                source,
                f"the JSON selector {json_selector!r} matched nothing",
                "check it against the file's structure, e.g. with `jq SELECTOR FILE`",
            )
        if suffix in _JSON_SUFFIXES:
            raise LoadError(source, "no values in the JSON (an empty array or object)", "add data or leave it out")
        raise LoadError(source, "no text content", "check that the file has text in it")
    return docs
