"""loaders: real files in, Documents or one clear LoadError out; splitting offsets; file discovery."""

from __future__ import annotations

import importlib.util
import os
import pickle
import random
import shutil
import tempfile
import zipfile
from itertools import pairwise
from pathlib import Path

import pytest
from langchain_core.documents import Document

from loaders import SUPPORTED_SUFFIXES, LoadError, document_id, iter_files, load_file, split_documents

UNSTRUCTURED = "unstructured_example_docs"
PYPDF = "pypdf_sample_files"

# pypdf decrypts AES only with `cryptography`; without it the copy-protected PDF (owner password
# only, AES) cannot give text, and the error must say what to install.
HAS_CRYPTOGRAPHY = importlib.util.find_spec("cryptography") is not None

UNSUPPORTED = "unsupported file type"
NEEDS_PASSWORD = "the PDF is encrypted and no password was given"

# What each file of ../shared/data/documents should give: "ok", or the start of the error's reason.
EXPECTED: dict[str, str] = {
    f"{PYPDF}/002-trivial-libre-office-writer.pdf": "ok",
    f"{PYPDF}/crazyones-pdfa.pdf": "ok",
    f"{PYPDF}/files.json": UNSUPPORTED,
    f"{PYPDF}/google-doc-document.pdf": "ok",
    f"{PYPDF}/habibi.pdf": "ok",
    f"{PYPDF}/libreoffice-writer-password.README.md": "ok",
    f"{PYPDF}/libreoffice-writer-password.pdf": NEEDS_PASSWORD,
    f"{PYPDF}/minimal-document.pdf": "ok",
    f"{PYPDF}/multicolumn.pdf": "ok",
    f"{PYPDF}/pdflatex-4-pages.pdf": "ok",
    f"{PYPDF}/pdflatex-forms.pdf": "ok",
    f"{PYPDF}/pdflatex-outline.pdf": "ok",
    f"{UNSTRUCTURED}/codeblock.md": "ok",
    f"{UNSTRUCTURED}/csv-with-long-lines.csv": "ok",
    f"{UNSTRUCTURED}/docx-hdrftr.docx": "ok",
    f"{UNSTRUCTURED}/docx-tables.docx": "ok",
    f"{UNSTRUCTURED}/eml_fake-email-attachment.eml": UNSUPPORTED,
    f"{UNSTRUCTURED}/eml_fake-email.eml": UNSUPPORTED,
    f"{UNSTRUCTURED}/example-10k-1p.html": "ok",
    f"{UNSTRUCTURED}/example-steelJIS-datasheet.html": "ok",
    f"{UNSTRUCTURED}/example-with-scripts.html": "ok",
    f"{UNSTRUCTURED}/fake-doc-emphasized-text.docx": "ok",
    f"{UNSTRUCTURED}/fake-doc.rtf": UNSUPPORTED,
    f"{UNSTRUCTURED}/fake-html-cp1252.html": "ok",
    f"{UNSTRUCTURED}/fake-html.html": "ok",
    f"{UNSTRUCTURED}/fake-power-point-table.pptx": UNSUPPORTED,
    f"{UNSTRUCTURED}/fake-power-point.pptx": UNSUPPORTED,
    f"{UNSTRUCTURED}/fake-text-utf-16.txt": "ok",
    f"{UNSTRUCTURED}/fake-text.txt": "ok",
    f"{UNSTRUCTURED}/fake.docx": "ok",
    f"{UNSTRUCTURED}/fake.odt": UNSUPPORTED,
    f"{UNSTRUCTURED}/handbook-1p.docx": "ok",
    f"{UNSTRUCTURED}/language-docs_eng_spa_mult.md": "ok",
    f"{UNSTRUCTURED}/norwich-city.txt": "ok",
    f"{UNSTRUCTURED}/pdf_DA-1p.pdf": "ok",
    f"{UNSTRUCTURED}/pdf_copy-protected.pdf": "ok"
    if HAS_CRYPTOGRAPHY
    else "the PDF is encrypted with AES, which needs an extra package",
    f"{UNSTRUCTURED}/pdf_embedded-images-tables.pdf": "ok",
    f"{UNSTRUCTURED}/pdf_fake-memo.pdf": "ok",
    f"{UNSTRUCTURED}/pdf_korean-text-with-tables.pdf": "ok",
    f"{UNSTRUCTURED}/pdf_layout-parser-paper-fast.pdf": "ok",
    f"{UNSTRUCTURED}/pdf_multi-column-2p.pdf": "ok",
    f"{UNSTRUCTURED}/pdf_password.pdf": NEEDS_PASSWORD,
    f"{UNSTRUCTURED}/pdf_pdf-with-ocr-text.pdf": "ok",
    # One page that is a picture of a table: nothing to extract without OCR.
    f"{UNSTRUCTURED}/pdf_single_table.pdf": "no extractable text",
    f"{UNSTRUCTURED}/semicolon-delimited.csv": "ok",
    f"{UNSTRUCTURED}/simple-table.md": "ok",
    f"{UNSTRUCTURED}/simple.docx": "ok",
    f"{UNSTRUCTURED}/simple.json": UNSUPPORTED,
    f"{UNSTRUCTURED}/stanley-cups-utf-16.csv": "ok",
    f"{UNSTRUCTURED}/stanley-cups.csv": "ok",
    f"{UNSTRUCTURED}/stanley-cups.xlsx": UNSUPPORTED,
    f"{UNSTRUCTURED}/table-multi-row-column-cells-actual.csv": "ok",
    f"{UNSTRUCTURED}/umlauts-utf8.md": "ok",
    f"{UNSTRUCTURED}/winter-sports.epub": UNSUPPORTED,
}

HINTS = {
    UNSUPPORTED: "supported types are",
    NEEDS_PASSWORD: "--pdf-password",
    "no extractable text": "run OCR first",
    "the PDF is encrypted with AES, which needs an extra package": "pip install cryptography",
}


def load_error(path: Path, **kwargs: object) -> LoadError:
    """The LoadError that load_file raises for ``path``, checked to be one well-formed line."""
    with pytest.raises(LoadError) as info:
        load_file(path, **kwargs)  # type: ignore[arg-type]
    err = info.value
    assert err.source == str(path.resolve())
    assert err.reason and err.hint
    assert str(err) == f"{err.source}: {err.reason}. {err.hint}"
    assert "\n" not in str(err)
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.source, copy.reason, copy.hint, str(copy)) == (err.source, err.reason, err.hint, str(err))
    return err


def assert_well_formed(docs: list[Document], path: Path) -> None:
    source = str(path.resolve())
    assert docs
    for doc in docs:
        assert doc.page_content.strip()
        meta = doc.metadata
        assert meta["source"] == source
        assert meta["doc_id"] == document_id(source)
        assert meta["type"] == path.suffix.lower().lstrip(".")
        assert meta["title"].strip()
        if meta["type"] == "pdf":
            assert isinstance(meta["page"], int) and meta["page"] >= 1
        else:
            assert meta["page"] is None


# --- every real document ------------------------------------------------------------------------


def test_expectations_cover_every_document(documents_dir: Path) -> None:
    on_disk = {p.relative_to(documents_dir).as_posix() for p in documents_dir.rglob("*") if p.is_file()}
    assert on_disk == set(EXPECTED)
    assert sum(outcome == "ok" for outcome in EXPECTED.values()) == 40 + HAS_CRYPTOGRAPHY


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_document(documents_dir: Path, name: str) -> None:
    path = documents_dir / name
    expected = EXPECTED[name]
    if expected == "ok":
        assert_well_formed(load_file(path), path)
        return
    err = load_error(path)
    assert err.reason.startswith(expected)
    assert HINTS[expected] in err.hint
    if expected == UNSUPPORTED:
        assert path.suffix in err.reason
        assert all(suffix in err.hint for suffix in SUPPORTED_SUFFIXES)
    else:
        assert path.suffix.lower() in SUPPORTED_SUFFIXES


# --- PDFs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "password", "text"),
    [
        (f"{PYPDF}/libreoffice-writer-password.pdf", "openpassword", "Lorem ipsum dolor sit amet"),
        # pypdf accepts the owner password as well as the user password.
        (f"{PYPDF}/libreoffice-writer-password.pdf", "permissionpassword", "Lorem ipsum dolor sit amet"),
        (f"{UNSTRUCTURED}/pdf_password.pdf", "password", "File with password"),
    ],
)
def test_encrypted_pdf_opens_with_its_password(documents_dir: Path, name: str, password: str, text: str) -> None:
    path = documents_dir / name
    docs = load_file(path, pdf_password=password)
    assert_well_formed(docs, path)
    assert [d.metadata["page"] for d in docs] == [1]
    assert text in docs[0].page_content


def test_encrypted_pdf_wrong_password(documents_dir: Path) -> None:
    err = load_error(documents_dir / PYPDF / "libreoffice-writer-password.pdf", pdf_password="nope")
    assert err.reason.startswith("wrong PDF password")
    assert "--pdf-password" in err.hint


def test_password_meant_for_other_files_does_not_break_plain_pdfs(documents_dir: Path) -> None:
    """pypdf rejects a password on an unencrypted PDF; one password serves a whole folder here."""
    path = documents_dir / PYPDF / "minimal-document.pdf"
    assert load_file(path, pdf_password="openpassword")[0].page_content == load_file(path)[0].page_content


@pytest.mark.skipif(not HAS_CRYPTOGRAPHY, reason="AES-encrypted PDFs need the cryptography package")
def test_copy_protected_pdf_opens_without_password(documents_dir: Path) -> None:
    path = documents_dir / UNSTRUCTURED / "pdf_copy-protected.pdf"
    for password in (None, "a password for other files"):
        docs = load_file(path, pdf_password=password)
        assert [d.metadata["page"] for d in docs] == [1, 2]
        assert "LayoutParser" in docs[0].page_content


def test_pdf_pages_are_numbered_from_one(documents_dir: Path) -> None:
    docs = load_file(documents_dir / PYPDF / "pdflatex-4-pages.pdf")
    assert [d.metadata["page"] for d in docs] == [1, 2, 3, 4]
    assert {d.metadata["total_pages"] for d in docs} == {4}
    assert len({d.page_content for d in docs}) == 4


def test_scanned_pdf_asks_for_ocr(documents_dir: Path) -> None:
    err = load_error(documents_dir / UNSTRUCTURED / "pdf_single_table.pdf")
    assert err.reason == "no extractable text in its 1 page(s)"
    assert "OCR" in err.hint


def test_truncated_pdf(documents_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "truncated.pdf"
    path.write_bytes((documents_dir / PYPDF / "pdflatex-4-pages.pdf").read_bytes()[:500])
    err = load_error(path)
    assert err.reason.startswith("cannot parse the PDF (")
    assert "damaged" in err.hint and "re-export" in err.hint


# --- encodings and formats ----------------------------------------------------------------------


def test_utf16_text(documents_dir: Path) -> None:
    (doc,) = load_file(documents_dir / UNSTRUCTURED / "fake-text-utf-16.txt")
    assert doc.page_content.startswith("This is a test document to use for unit tests.")
    assert "Doylestown, PA 18901" in doc.page_content
    assert "\x00" not in doc.page_content and "\ufeff" not in doc.page_content


def test_cp1252_html(documents_dir: Path) -> None:
    (doc,) = load_file(documents_dir / UNSTRUCTURED / "fake-html-cp1252.html")
    text = doc.page_content
    assert 'Sie sagte: "Das war köstlich!" und lächelte dabei. Der Preis betrug 15,50 €.' in text
    assert "El niño comió paella con ñoquis." in text
    assert "Ã" not in text  # UTF-8 read as cp1252, or the other way round
    assert doc.metadata["title"] == "fake-html-cp1252.html"  # no <title>: the file name


def test_utf8_markdown(documents_dir: Path) -> None:
    (doc,) = load_file(documents_dir / UNSTRUCTURED / "umlauts-utf8.md")
    assert doc.page_content == "## können\n\nkönnen\n\näöüß\n"


def test_html_title_and_no_scripts_or_styles(documents_dir: Path) -> None:
    path = documents_dir / UNSTRUCTURED / "example-with-scripts.html"
    assert "jQuery(document).ready" in path.read_text(encoding="utf-8")
    (doc,) = load_file(path)
    assert doc.metadata["title"] == (
        "Russian Offensive Campaign Assessment, December 13 | Institute for the Study of War"
    )
    for code in ("jQuery", "function (", "@import url", "GoogleAnalyticsObject"):
        assert code not in doc.page_content
    assert "\n\n\n" not in doc.page_content  # the markup's blank-line runs are collapsed


def test_semicolon_csv_rows(documents_dir: Path) -> None:
    docs = load_file(documents_dir / UNSTRUCTURED / "semicolon-delimited.csv")
    assert [d.metadata["row"] for d in docs] == [0, 1, 2, 3]
    for doc in docs:
        lines = doc.page_content.split("\n")
        assert [line.split(": ")[0] for line in lines] == ["Lorem, ipsum", "dolor sit", "amet"]
    assert docs[1].page_content == "Lorem, ipsum: sed, do\ndolor sit: eiusmod\namet: tempor incididunt"


def test_utf16_csv_matches_utf8_csv(documents_dir: Path) -> None:
    utf16 = load_file(documents_dir / UNSTRUCTURED / "stanley-cups-utf-16.csv")
    utf8 = load_file(documents_dir / UNSTRUCTURED / "stanley-cups.csv")
    assert [d.page_content for d in utf16] == [d.page_content for d in utf8]
    assert any("Maple Leafs" in d.page_content for d in utf16)


def test_csv_blank_rows_dropped_and_tsv(tmp_path: Path) -> None:
    csv_path = tmp_path / "people.csv"
    csv_path.write_text("name,city\nAda,London\n,\nGrace,\n", encoding="utf-8")
    docs = load_file(csv_path)
    assert [d.page_content for d in docs] == ["name: Ada\ncity: London", "name: Grace\ncity: "]
    assert [d.metadata["row"] for d in docs] == [0, 2]
    tsv_path = tmp_path / "people.tsv"
    tsv_path.write_text("name\tcity\nAda\tLondon, UK\n", encoding="utf-8")
    assert [d.page_content for d in load_file(tsv_path)] == ["name: Ada\ncity: London, UK"]
    header_only = tmp_path / "header.csv"
    header_only.write_text("name,city\n", encoding="utf-8")
    assert load_error(header_only).reason == "no text content"


def test_docx_text(documents_dir: Path) -> None:
    (doc,) = load_file(documents_dir / UNSTRUCTURED / "fake.docx")
    assert doc.page_content == "Lorem ipsum dolor sit amet."


def test_suffix_case_does_not_matter(documents_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "UPPER.TXT"
    shutil.copy(documents_dir / UNSTRUCTURED / "fake-text.txt", path)
    (doc,) = load_file(path)
    assert doc.metadata["type"] == "txt"


# --- errors made in tmp_path --------------------------------------------------------------------


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.touch()
    assert load_error(path).reason == "empty file (0 bytes)"


def test_whitespace_only_file(tmp_path: Path) -> None:
    path = tmp_path / "blank.md"
    path.write_text(" \n\t\n", encoding="utf-8")
    assert load_error(path).reason == "no text content"


@pytest.mark.parametrize("kind", ["random", "zip"])
def test_binary_junk_with_a_text_suffix(documents_dir: Path, tmp_path: Path, kind: str) -> None:
    path = tmp_path / "junk.txt"
    if kind == "random":
        path.write_bytes(random.Random(0).randbytes(4096))
    else:  # a real binary file with the wrong name
        shutil.copy(documents_dir / UNSTRUCTURED / "stanley-cups.xlsx", path)
    err = load_error(path)
    assert "binary" in err.reason
    assert "UTF-8" in err.hint


def test_html_declared_charset(documents_dir: Path, tmp_path: Path) -> None:
    """A <meta charset> that decodes the page is used; a wrong one is passed over."""
    latin = tmp_path / "latin.html"
    latin.write_bytes(b'<meta charset="iso-8859-1"><title>Caf\xe9</title><p>cr\xe8me br\xfbl\xe9e</p>')
    (doc,) = load_file(latin)
    assert doc.metadata["title"] == "Café"
    assert "crème brûlée" in doc.page_content
    wrong = tmp_path / "wrong.html"
    cp1252 = (documents_dir / UNSTRUCTURED / "fake-html-cp1252.html").read_bytes()
    wrong.write_bytes(cp1252.replace(b"<html>", b'<html><head><meta charset="utf-8"></head>'))
    (doc,) = load_file(wrong)
    assert 'Sie sagte: "Das war köstlich!"' in doc.page_content


def test_text_that_its_detected_encoding_cannot_decode(tmp_path: Path) -> None:
    """The encoding is guessed from the first 64 KiB; a byte past that which it cannot decode."""
    path = tmp_path / "late-surprise.txt"
    path.write_bytes("café au lait. ".encode("cp1252") * 5000 + b"\x81")
    err = load_error(path)
    assert err.reason.startswith("the text cannot be decoded as cp1252 (")
    assert err.hint == "convert the file to UTF-8"


def test_corrupt_docx(tmp_path: Path) -> None:
    not_zip = tmp_path / "not-a-zip.docx"
    not_zip.write_bytes(b"this is not a Word document")
    assert load_error(not_zip).reason.startswith("cannot read the DOCX (BadZipFile: ")
    no_body = tmp_path / "no-body.docx"
    with zipfile.ZipFile(no_body, "w") as archive:
        archive.writestr("hello.txt", "hi")
    err = load_error(no_body)
    assert err.reason.startswith("cannot read the DOCX (KeyError: ")
    assert "re-save" in err.hint


def test_file_over_max_bytes(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    path.write_text("word " * 400, encoding="utf-8")
    err = load_error(path, max_bytes=1000)
    assert err.reason == "file is 2000 bytes, over the 1000 bytes limit"
    assert "max_bytes" in err.hint
    assert load_file(path, max_bytes=2000)


def test_unsupported_and_missing_suffix(tmp_path: Path) -> None:
    for name, shown in (("notes.rtf", "'.rtf'"), ("Makefile", "(no suffix)")):
        path = tmp_path / name
        path.write_text("text", encoding="utf-8")
        err = load_error(path)
        assert err.reason == f"unsupported file type {shown}"


def test_missing_file_and_directory(tmp_path: Path) -> None:
    assert load_error(tmp_path / "nowhere.txt").reason == "file not found"
    folder = tmp_path / "folder.txt"
    folder.mkdir()
    err = load_error(folder)
    assert err.reason == "is a directory, not a file"
    assert "folder" in err.hint


def test_unreadable_file() -> None:
    folder = Path(tempfile.mkdtemp())
    folder.chmod(0o755)
    path = folder / "secret.txt"
    path.write_text("secret", encoding="utf-8")
    path.chmod(0)
    # Root reads files whatever their mode, so as root the check runs as "nobody" (effective uid only,
    # which root can take back).
    as_root = os.geteuid() == 0
    try:
        if as_root:
            os.seteuid(65534)
        err = load_error(path)
    finally:
        if as_root:
            os.seteuid(0)
        shutil.rmtree(folder)
    assert err.reason == "permission denied"
    assert "chmod" in err.hint


def test_document_id_is_stable_across_path_spellings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.txt"
    path.write_text("a", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    ids = {
        document_id("a.txt"),
        document_id("./a.txt"),
        document_id(str(path)),
        document_id(str(path.resolve())),
    }
    assert len(ids) == 1
    (doc_id,) = ids
    assert len(doc_id) == 16 and int(doc_id, 16) >= 0
    assert document_id(str(tmp_path / "b.txt")) != doc_id


# --- split_documents ----------------------------------------------------------------------------


def test_split_offsets_metadata_and_sizes(documents_dir: Path) -> None:
    pages = load_file(documents_dir / PYPDF / "pdflatex-4-pages.pdf")
    chunks = split_documents(pages, chunk_size=500, chunk_overlap=100)
    by_page = {d.metadata["page"]: d.page_content for d in pages}
    assert len(chunks) > len(pages)
    for chunk in chunks:
        meta = chunk.metadata
        text = by_page[meta["page"]]
        assert chunk.page_content == text[meta["start_index"] : meta["end_index"]]
        assert 0 < len(chunk.page_content) <= 500 and chunk.page_content.strip()
        assert {k: v for k, v in meta.items() if k not in {"start_index", "end_index", "chunk"}} == (
            pages[meta["page"] - 1].metadata
        )
    # chunk counts across the pages of one source, in order.
    assert [c.metadata["chunk"] for c in chunks] == list(range(len(chunks)))
    # Neighbouring chunks of a page overlap by at most chunk_overlap characters.
    for before, after in pairwise(chunks):
        if before.metadata["page"] == after.metadata["page"]:
            assert after.metadata["start_index"] >= before.metadata["end_index"] - 100


def test_split_counts_chunks_per_source_and_drops_blank(documents_dir: Path) -> None:
    docs = [
        *load_file(documents_dir / UNSTRUCTURED / "norwich-city.txt"),
        *load_file(documents_dir / UNSTRUCTURED / "fake-html-cp1252.html"),
        Document(page_content="   \n\n  ", metadata={"source": "blank"}),
    ]
    chunks = split_documents(docs)
    sources = [c.metadata["source"] for c in chunks]
    assert "blank" not in sources
    for source in set(sources):
        numbers = [c.metadata["chunk"] for c in chunks if c.metadata["source"] == source]
        assert numbers == list(range(len(numbers)))
    norwich = docs[0].page_content
    for chunk in chunks[: sources.count(docs[0].metadata["source"])]:
        assert norwich[chunk.metadata["start_index"] : chunk.metadata["end_index"]] == chunk.page_content
        assert len(chunk.page_content) <= 1000


# --- iter_files ---------------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for name in (
        "a.txt",
        "b/c.md",
        "b/d.pdf",
        "b/e/f.md",
        "z.md",
        ".hidden.txt",
        ".git/config.txt",
        "b/.cache/x.md",
        "build/out.txt",
    ):
        path = tmp_path / "docs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name, encoding="utf-8")
    return tmp_path / "docs"


def names(paths: list[Path], root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in paths]


def test_iter_files_walks_sorted_and_skips_hidden(tree: Path) -> None:
    assert names(list(iter_files([tree])), tree) == [
        "a.txt",
        "b/c.md",
        "b/d.pdf",
        "b/e/f.md",
        "build/out.txt",
        "z.md",
    ]


def test_iter_files_include_exclude(tree: Path) -> None:
    assert names(list(iter_files([tree], include=["*.md"])), tree) == ["b/c.md", "b/e/f.md", "z.md"]
    # "**/" also matches no folder: top-level z.md is included.
    assert names(list(iter_files([tree], include=["**/*.md"])), tree) == ["b/c.md", "b/e/f.md", "z.md"]
    assert names(list(iter_files([tree], include=["b/**/*.md"])), tree) == ["b/c.md", "b/e/f.md"]
    assert names(list(iter_files([tree], include=["*.md", "*.pdf"], exclude=["b/e/*"])), tree) == [
        "b/c.md",
        "b/d.pdf",
        "z.md",
    ]
    # A folder that matches an exclude pattern is skipped whole.
    assert names(list(iter_files([tree], exclude=["build", "b"])), tree) == ["a.txt", "z.md"]


def test_iter_files_given_files_and_duplicates(tree: Path) -> None:
    hidden = tree / ".hidden.txt"
    missing = tree / "missing.pdf"
    found = list(iter_files([hidden, tree / "z.md", tree, missing, tree / "b"], include=["*.txt"]))
    # Files named directly come as given, globs or not, first; the folder adds the rest, once each.
    assert found == [hidden, tree / "z.md", tree / "a.txt", tree / "build" / "out.txt", missing]
