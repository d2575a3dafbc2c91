"""One file in, LangChain Documents out: file type -> loader, encoding detection, clear errors.

Every file type is one entry of ``_LOADERS`` below. ``load_file`` does the checks that every type
shares (exists, size, readable), builds the loader, and turns whatever goes wrong into a
``LoadError`` that says which file, what is wrong and what to do, so that one bad document never
stops an ingest of many.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import logging
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import chardet
from langchain_community.document_loaders import (
    BSHTMLLoader,
    CSVLoader,
    Docx2txtLoader,
    PyPDFLoader,
    TextLoader,
)
from langchain_core.document_loaders import BaseLoader
from langchain_core.documents import Document
from pypdf.errors import DependencyError, FileNotDecryptedError, PyPdfError, WrongPasswordError

__all__ = ["SUPPORTED_SUFFIXES", "LoadError", "document_id", "load_file"]

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
# Control characters that real text files do contain (tabs, line breaks, form feeds, ANSI colours).
_TEXT_CONTROLS = frozenset("\t\n\r\f\v\x1b")
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.IGNORECASE)
# Metadata that loaders add and that is worth keeping beside the five common keys.
_KEPT_LOADER_METADATA = ("row", "total_pages", "page_label")


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


def document_id(source: str) -> str:
    """Stable id of a source: the first 16 hex digits of the SHA-256 of its resolved path string.

    The path is resolved first, so ``docs/a.pdf``, ``./docs/a.pdf`` and its absolute form share an id.
    """
    return hashlib.sha256(str(_resolved(Path(source))).encode("utf-8")).hexdigest()[:16]


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
    controls = sum(1 for ch in sample if ch not in _TEXT_CONTROLS and unicodedata.category(ch) == "Cc")
    return controls > _MAX_CONTROL_SHARE * len(sample)


def _text_encoding(path: Path, *, html: bool = False) -> str:
    """Encoding for the loader to open ``path`` with, after checking that the file really is text."""
    raw = path.read_bytes()
    source = str(_resolved(path))
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


def _html_loader(path: Path, _password: str | None) -> BaseLoader:
    return BSHTMLLoader(path, open_encoding=_text_encoding(path, html=True), bs_kwargs=_BS_KWARGS)


def _text_loader(path: Path, _password: str | None) -> BaseLoader:
    return TextLoader(path, encoding=_text_encoding(path))


_LOADERS: dict[str, _LoaderFactory] = {
    ".txt": _text_loader,  # TextLoader, encoding detected (BOM, UTF-8, then chardet)
    # TextLoader: Markdown kept as plain text (UnstructuredMarkdownLoader needs `unstructured`)
    ".md": _text_loader,
    ".markdown": _text_loader,  # TextLoader, as .md
    ".pdf": lambda path, password: PyPDFLoader(path, password=password),  # PyPDFLoader: a Document per page
    ".html": _html_loader,  # BSHTMLLoader: visible text and <title>, encoding detected
    ".htm": _html_loader,  # BSHTMLLoader, as .html
    ".csv": _csv_loader,  # CSVLoader: a Document per row, "column: value" lines
    ".tsv": _csv_loader,  # CSVLoader, as .csv (the sniffer finds the tabs)
    ".docx": lambda path, _password: Docx2txtLoader(path),  # Docx2txtLoader: body, tables, headers
}

SUPPORTED_SUFFIXES: frozenset[str] = frozenset(_LOADERS)
"""File suffixes (lower case, with the dot) that ``load_file`` reads."""

# Text pulled out of markup (HTML, DOCX) carries the markup's layout as runs of blank lines.
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
    if suffix == ".docx":
        return LoadError(
            source,
            f"cannot read the DOCX ({detail})",
            "the file is damaged or not a real .docx; re-save it from Word or LibreOffice",
        )
    return LoadError(source, f"the loader failed ({detail})", "check the file's contents or re-save it")


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


def load_file(path: Path, *, pdf_password: str | None = None, max_bytes: int = 100 * _MiB) -> list[Document]:
    """Load one file into Documents: one per PDF page, one per CSV row, one for any other type.

    Each Document's metadata has ``source`` (resolved absolute path), ``doc_id``
    (``document_id(source)``), ``page`` (1-based PDF page, else None), ``title`` (HTML ``<title>``,
    else the file name) and ``type`` (suffix without the dot); CSV rows keep ``row`` (0-based) and
    PDF pages ``total_pages`` and ``page_label``. Empty pages and rows are dropped.

    ``pdf_password`` opens encrypted PDFs; a PDF that opens without it (owner password only) still
    opens when a wrong one is given, so one password can be passed for a whole folder.

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
    doc_id = document_id(source)
    docs: list[Document] = []
    for doc in loaded:
        text = _tidy(doc.page_content) if suffix in {".html", ".htm", ".docx"} else doc.page_content
        if not text.strip() or (file_type in {"csv", "tsv"} and _is_blank_csv_row(text)):
            continue
        title = " ".join(str(doc.metadata.get("title") or "").split()) if file_type in {"html", "htm"} else ""
        metadata: dict[str, Any] = {
            "source": source,
            "doc_id": doc_id,
            "page": int(doc.metadata["page"]) + 1 if file_type == "pdf" else None,
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
        raise LoadError(source, "no text content", "check that the file has text in it")
    return docs
