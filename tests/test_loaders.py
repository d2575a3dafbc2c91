"""loaders: real files in, Documents or one clear LoadError out; splitting offsets; file discovery."""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import random
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from itertools import pairwise
from pathlib import Path

import openpyxl
import pytest
from langchain_core.documents import Document
from pptx import Presentation
from pptx.util import Inches

from loaders import SUPPORTED_SUFFIXES, LoadError, document_id, iter_files, load_file, split_documents

UNSTRUCTURED = "unstructured_example_docs"
PYPDF = "pypdf_sample_files"

# pypdf decrypts AES only with `cryptography`; without it the copy-protected PDF (owner password
# only, AES) cannot give text, and the error must say what to install.
HAS_CRYPTOGRAPHY = importlib.util.find_spec("cryptography") is not None

NEEDS_PASSWORD = "the PDF is encrypted and no password was given"


@dataclass(frozen=True)
class Contains:
    """The file loads, and its text has this phrase in it."""

    phrase: str


# What each file of ../shared/data/documents should give: "ok", Contains(a phrase of its text), or the start
# of the error's reason.
EXPECTED: dict[str, str | Contains] = {
    f"{PYPDF}/002-trivial-libre-office-writer.pdf": "ok",
    f"{PYPDF}/crazyones-pdfa.pdf": "ok",
    # A top-level object is one Document: "key: value" lines, nested values as compact JSON.
    f"{PYPDF}/files.json": Contains('data: [{"path":"001-trivial/minimal-document.pdf"'),
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
    f"{UNSTRUCTURED}/eml_fake-email-attachment.eml": Contains("- Lots of whitespace"),
    f"{UNSTRUCTURED}/eml_fake-email.eml": Contains("- Violets are blue"),
    f"{UNSTRUCTURED}/example-10k-1p.html": "ok",
    f"{UNSTRUCTURED}/example-steelJIS-datasheet.html": "ok",
    f"{UNSTRUCTURED}/example-with-scripts.html": "ok",
    f"{UNSTRUCTURED}/fake-doc-emphasized-text.docx": "ok",
    f"{UNSTRUCTURED}/fake-doc.rtf": Contains("Row 2, Cell 1|Row 2, Cell 2|"),
    f"{UNSTRUCTURED}/fake-html-cp1252.html": "ok",
    f"{UNSTRUCTURED}/fake-html.html": "ok",
    f"{UNSTRUCTURED}/fake-power-point-table.pptx": Contains("Tangerine | Pink | Aqua"),
    f"{UNSTRUCTURED}/fake-power-point.pptx": Contains("Here is some text in a text box!"),
    f"{UNSTRUCTURED}/fake-text-utf-16.txt": "ok",
    f"{UNSTRUCTURED}/fake-text.txt": "ok",
    f"{UNSTRUCTURED}/fake.docx": "ok",
    f"{UNSTRUCTURED}/fake.odt": Contains("Leader | Sarah | Mark | Ryan"),
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
    f"{UNSTRUCTURED}/simple.json": Contains("text: These are a few of my favorite things:"),
    f"{UNSTRUCTURED}/stanley-cups-utf-16.csv": "ok",
    f"{UNSTRUCTURED}/stanley-cups.csv": "ok",
    f"{UNSTRUCTURED}/stanley-cups.xlsx": Contains("Team: Maple Leafs\nLocation: TOR\nStanley Cups: 13"),
    f"{UNSTRUCTURED}/table-multi-row-column-cells-actual.csv": "ok",
    f"{UNSTRUCTURED}/umlauts-utf8.md": "ok",
    f"{UNSTRUCTURED}/winter-sports.epub": Contains("These sixteen turns, or changes of direction"),
}

HINTS = {
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
        if meta["type"] in {"pdf", "pptx"}:
            assert isinstance(meta["page"], int) and meta["page"] >= 1
        else:
            assert meta["page"] is None
        # LangChain's indexing API hashes the metadata as JSON: a date or bytes value would fail the ingest.
        json.dumps(meta)


# --- every real document ------------------------------------------------------------------------


def test_expectations_cover_every_document(documents_dir: Path) -> None:
    on_disk = {p.relative_to(documents_dir).as_posix() for p in documents_dir.rglob("*") if p.is_file()}
    assert on_disk == set(EXPECTED)
    assert sum(outcome == "ok" or isinstance(outcome, Contains) for outcome in EXPECTED.values()) == (
        50 + HAS_CRYPTOGRAPHY
    )
    # Every file type that the shared documents hold now loads.
    assert {Path(name).suffix.lower() for name in EXPECTED} <= SUPPORTED_SUFFIXES


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_document(documents_dir: Path, name: str) -> None:
    path = documents_dir / name
    expected = EXPECTED[name]
    if expected == "ok" or isinstance(expected, Contains):
        docs = load_file(path)
        assert_well_formed(docs, path)
        if isinstance(expected, Contains):
            assert any(expected.phrase in doc.page_content for doc in docs)
        return
    err = load_error(path)
    assert err.reason.startswith(expected)
    assert HINTS[expected] in err.hint


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


def test_double_encoded_utf8_is_repaired(documents_dir: Path) -> None:
    # The article's UTF-8 was once read as cp1252 and saved as UTF-8 again: each en dash became three characters.
    path = documents_dir / UNSTRUCTURED / "norwich-city.txt"
    assert "1986\u00e2\u0080\u00931990 Watford" in path.read_text(encoding="utf-8")
    (doc,) = load_file(path)
    assert "1986\u20131990 Watford 63 (9)" in doc.page_content
    assert "\u00e2\u0080" not in doc.page_content


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


def test_xlsx_a_document_per_sheet(documents_dir: Path) -> None:
    docs = load_file(documents_dir / UNSTRUCTURED / "stanley-cups.xlsx")
    assert [d.metadata["sheet"] for d in docs] == ["Stanley Cups", "Stanley Cups Since 67"]
    # The title row above the header stays a line of its own; each row below it reads like a CSV row.
    assert docs[1].page_content.split("\n\n") == [
        "Stanley Cups Since 67",
        "Team: Blues\nLocation: STL\nStanley Cups: 1",
        "Team: Flyers\nLocation: PHI\nStanley Cups: 2",
        "Team: Maple Leafs\nLocation: TOR\nStanley Cups: 0",
    ]


def test_xlsx_values_unnamed_columns_and_empty_sheets(tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    people = workbook.active
    people.title = "People"
    people.append(["name", None, "joined", "score"])
    people.append(["Ada", "admin", datetime(2024, 1, 2), 3.0])
    people.append([None, None, None, None])
    people.append(["Grace", None, datetime(2024, 1, 2, 9, 30), 2.5])
    workbook.create_sheet("Empty")
    path = tmp_path / "people.xlsx"
    workbook.save(path)
    (doc,) = load_file(path)
    assert doc.metadata["sheet"] == "People"
    # An unnamed column takes its letter; empty cells and rows are left out.
    assert doc.page_content == (
        "name: Ada\nB: admin\njoined: 2024-01-02\nscore: 3\n\nname: Grace\njoined: 2024-01-02 09:30:00\nscore: 2.5"
    )


def test_pptx_a_document_per_slide(tmp_path: Path) -> None:
    deck = Presentation()
    first = deck.slides.add_slide(deck.slide_layouts[5])  # title only
    first.shapes.title.text = "Quarterly results"
    first.notes_slide.notes_text_frame.text = "Say the numbers slowly."
    deck.slides.add_slide(deck.slide_layouts[6])  # blank: dropped, the numbers of the others stay
    third = deck.slides.add_slide(deck.slide_layouts[6])
    group = third.shapes.add_group_shape()
    box = group.shapes.add_textbox(Inches(1), Inches(1), Inches(3), Inches(1))
    box.text_frame.text = "Inside a group"
    table = third.shapes.add_table(2, 2, Inches(1), Inches(3), Inches(4), Inches(1)).table
    for row, (left, right) in enumerate([("Region", "Sales"), ("North", "12")]):
        table.cell(row, 0).text, table.cell(row, 1).text = left, right
    path = tmp_path / "deck.pptx"
    deck.save(path)
    docs = load_file(path)
    assert_well_formed(docs, path)
    assert [d.metadata["page"] for d in docs] == [1, 3]
    assert docs[0].page_content == "Quarterly results\n\nSay the numbers slowly."
    assert docs[1].page_content == "Inside a group\n\nRegion | Sales\nNorth | 12"


def test_eml_body_headers_and_attachment_names(documents_dir: Path) -> None:
    path = documents_dir / UNSTRUCTURED / "eml_fake-email-attachment.eml"
    (doc,) = load_file(path)
    assert doc.metadata["title"] == "Fake email with attachment"
    assert doc.metadata["from"] == doc.metadata["to"] == "Mallori Harrell <mallori@unstructured.io>"
    assert doc.metadata["date"] == "2022-12-23T12:08:48-06:00"
    assert doc.metadata["attachments"] == ["fake-attachment.txt"]
    # The plain-text part is the body; the attachment (base64 "Hey this is a fake attachment!") is not loaded.
    assert doc.page_content.startswith("Hello!\n\nHere's the attachments!")
    assert "fake attachment" not in doc.page_content
    assert "<div" not in doc.page_content


def test_eml_html_only_body_becomes_text(tmp_path: Path) -> None:
    message = EmailMessage()
    message["Subject"] = "Menu"
    message["From"] = "chef@example.org"
    message.set_content(
        "<div>Soup of the day</div><div><ul><li>Leek</li><li>Potato &amp; chive</li></ul></div>", "html"
    )
    path = tmp_path / "menu.eml"
    path.write_bytes(message.as_bytes())
    (doc,) = load_file(path)
    assert doc.page_content == "Soup of the day\n\nLeek\n\nPotato & chive"
    assert (doc.metadata["title"], doc.metadata["to"], doc.metadata["attachments"]) == ("Menu", "", [])


def test_epub_chapters_in_spine_order(documents_dir: Path) -> None:
    docs = load_file(documents_dir / UNSTRUCTURED / "winter-sports.epub")
    chapters = [d.metadata["chapter"] for d in docs]
    # The cover (spine item 1) is a picture: no text, no Document.
    assert chapters == sorted(chapters) and chapters[0] == 2 and len(docs) == 9
    titles = [d.metadata["title"] for d in docs]
    assert "Winter Sports in Switzerland: CHAPTER II RINKS AND SKATERS" in titles
    text = "\n".join(d.page_content for d in docs)
    assert text.index("THE SUN-SEEKER") < text.index("TOBOGGANING") < text.index("FOR PARENTS AND GUARDIANS")
    assert "<p" not in text and "Project Gutenberg License" in docs[-1].page_content


def test_rtf_and_odt_text(documents_dir: Path) -> None:
    (rtf,) = load_file(documents_dir / UNSTRUCTURED / "fake-doc.rtf")
    assert rtf.page_content.startswith("My First Heading\nMy first paragraph.\nTable Example:\nColumn 1|Column 2|")
    assert "\\" not in rtf.page_content and "{" not in rtf.page_content
    (odt,) = load_file(documents_dir / UNSTRUCTURED / "fake.odt")
    assert odt.page_content == (
        "Lorem ipsum dolor sit amet.\n\n"
        "Header row | Mon | Wed | Fri\nColor | Blue | Red | Green\nTime | 1pm | 2pm | 3pm\nLeader | Sarah | Mark | Ryan"
    )


def test_json_array_elements_are_documents(documents_dir: Path) -> None:
    path = documents_dir / UNSTRUCTURED / "simple.json"
    elements = json.loads(path.read_text(encoding="utf-8"))
    docs = load_file(path)
    assert [d.metadata["seq_num"] for d in docs] == list(range(1, len(elements) + 1))
    assert docs[1].page_content.split("\n") == [
        f"element_id: {elements[1]['element_id']}",
        f"metadata: {json.dumps(elements[1]['metadata'], separators=(',', ':'))}",
        "text: Parrots",
        "type: ListItem",
    ]


def test_json_selector(documents_dir: Path, tmp_path: Path) -> None:
    path = documents_dir / PYPDF / "files.json"
    listed = [entry["path"] for entry in json.loads(path.read_text(encoding="utf-8"))["data"]]
    docs = load_file(path, json_selector=".data[].path")
    assert [d.page_content for d in docs] == listed
    encrypted = load_file(path, json_selector=".data[] | select(.encrypted) | {path, producer}")
    assert [d.page_content.split("\n")[0] for d in encrypted] == [
        "path: " + entry["path"] for entry in json.loads(path.read_text(encoding="utf-8"))["data"] if entry["encrypted"]
    ]
    feed = tmp_path / "feed.json"
    feed.write_text(json.dumps({"items": [{"body": "Grüße"}, {"title": "no body"}, {"body": "two"}]}), encoding="utf-8")
    # A missing value is null, and null is no text: only the two bodies.
    assert [d.page_content for d in load_file(feed, json_selector=".items[].body")] == ["Grüße", "two"]
    # Without a selector the whole object is one Document; other types ignore the selector.
    assert load_file(feed)[0].page_content.startswith('items: [{"body":"Grüße"}')
    assert load_file(documents_dir / UNSTRUCTURED / "fake-text.txt", json_selector=".x")


def test_json_selector_errors(tmp_path: Path) -> None:
    feed = tmp_path / "feed.json"
    feed.write_text('{"items": [{"body": "one"}]}', encoding="utf-8")
    err = load_error(feed, json_selector=".items[")
    assert err.reason.startswith("invalid JSON selector '.items[' (jq: error: syntax error")
    assert "jq syntax" in err.hint
    err = load_error(feed, json_selector=".items[].body[]")
    assert err.reason == 'the JSON selector failed (ValueError: Cannot iterate over string ("one"))'
    err = load_error(feed, json_selector=".entries[]?")
    assert err.reason == "the JSON selector '.entries[]?' matched nothing"
    assert "jq SELECTOR FILE" in err.hint


def test_jsonl_lines_and_selector(tmp_path: Path) -> None:
    path = tmp_path / "notes.jsonl"
    path.write_text('{"id": 1, "text": "first"}\n\n{"id": 2, "text": "second", "tags": ["a"]}\n"just text"\n')
    assert [d.page_content for d in load_file(path)] == [
        "id: 1\ntext: first",
        'id: 2\ntext: second\ntags: ["a"]',
        "just text",
    ]
    assert [d.page_content for d in load_file(path, json_selector=".text? // empty")] == ["first", "second"]


def test_jsonl_with_one_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "notes.jsonl"
    path.write_text('{"text": "first"}\n\n{"text": "second",}\n{"text": "third"}\n', encoding="utf-8")
    err = load_error(path)
    assert err.reason == "invalid JSON on line 3 (Expecting property name enclosed in double quotes at column 19)"
    assert "fix or remove that line" in err.hint


def test_empty_json_array(tmp_path: Path) -> None:
    path = tmp_path / "empty.json"
    path.write_text("[]\n", encoding="utf-8")
    err = load_error(path)
    assert err.reason == "no values in the JSON (an empty array or object)"


def test_invalid_json_names_the_place(tmp_path: Path) -> None:
    path = tmp_path / "two-values.json"
    path.write_text('{"a": 1}\n{"a": 2}\n', encoding="utf-8")
    err = load_error(path)
    assert err.reason == "invalid JSON (Extra data at line 2 column 1)"
    assert ".jsonl" in err.hint


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


# What a damaged copy of a real file of each new type gives, cut in half or as random bytes: the error's start.
ZIPPED = ("stanley-cups.xlsx", "fake-power-point.pptx", "winter-sports.epub", "fake.odt")
DAMAGED: dict[str, dict[str, str]] = {
    **{
        name: dict.fromkeys(
            ("truncated", "garbage"),
            f"cannot read the {Path(name).suffix[1:].upper()} (BadZipFile: File is not a zip file)",
        )
        for name in ZIPPED
    },
    "fake-doc.rtf": {"truncated": "the RTF is cut short: 2 group(s) are not closed", "garbage": "cannot detect"},
    "simple.json": {"truncated": "invalid JSON (", "garbage": "the file is not UTF-8 text ("},
    # Half a multipart message has lost the boundary that ends its text part.
    "eml_fake-email.eml": {"truncated": "no text content", "garbage": "not an e-mail: no From, To, Subject or Date"},
}


@pytest.mark.parametrize("name", sorted(DAMAGED))
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_files_of_the_new_types(documents_dir: Path, tmp_path: Path, name: str, damage: str) -> None:
    original = (documents_dir / UNSTRUCTURED / name).read_bytes()
    path = tmp_path / f"damaged{Path(name).suffix}"
    path.write_bytes(original[: len(original) // 2] if damage == "truncated" else random.Random(0).randbytes(4096))
    err = load_error(path)
    assert err.reason.startswith(DAMAGED[name][damage])
    if name in ZIPPED:
        assert f"not a real {path.suffix}; re-save it" in err.hint


def test_office_file_with_the_wrong_content(documents_dir: Path, tmp_path: Path) -> None:
    """A real ZIP of another kind (a DOCX named .xlsx/.pptx/.odt/.epub) is reported as not a real file of the type."""
    for suffix, saved_by in (
        (".xlsx", "Excel"),
        (".pptx", "PowerPoint"),
        (".odt", "LibreOffice"),
        (".epub", "Calibre"),
    ):
        path = tmp_path / f"report{suffix}"
        shutil.copy(documents_dir / UNSTRUCTURED / "fake.docx", path)
        err = load_error(path)
        assert err.reason.startswith(f"cannot read the {suffix[1:].upper()} (")
        assert f"not a real {suffix}" in err.hint and saved_by in err.hint


def test_rtf_suffix_on_plain_text(tmp_path: Path) -> None:
    path = tmp_path / "notes.rtf"
    path.write_text("just some notes", encoding="utf-8")
    assert load_error(path).reason == "not an RTF file: it does not start with {\\rtf"


def test_file_over_max_bytes(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    path.write_text("word " * 400, encoding="utf-8")
    err = load_error(path, max_bytes=1000)
    assert err.reason == "file is 2000 bytes, over the 1000 bytes limit"
    assert "max_bytes" in err.hint
    assert load_file(path, max_bytes=2000)


def test_unsupported_and_missing_suffix(tmp_path: Path) -> None:
    for name, shown in (("notes.doc", "'.doc'"), ("Makefile", "(no suffix)")):
        path = tmp_path / name
        path.write_text("text", encoding="utf-8")
        err = load_error(path)
        assert err.reason == f"unsupported file type {shown}"
        assert "supported types are" in err.hint
        assert all(suffix in err.hint for suffix in SUPPORTED_SUFFIXES)


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
