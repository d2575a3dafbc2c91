"""loaders.web: a real local site (stdlib http.server on 127.0.0.1) built from the real HTML pages of
../shared/data/documents, crawled for real: depth and page limits, same site, robots.txt, sitemaps, bad pages."""

from __future__ import annotations

import random
import re
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from langchain_core.documents import Document

from loaders import LoadError, split_documents
from loaders.sources import SourceUnit
from loaders.web import crawl, site_scope

UNSTRUCTURED = "unstructured_example_docs"
ISW_TITLE = "Russian Offensive Campaign Assessment, December 13 | Institute for the Study of War"


@contextmanager
def serve(root: Path) -> Iterator[tuple[str, list[str]]]:
    """Serve ``root`` on a free 127.0.0.1 port; yields its base URL and the paths requested, in order.

    ``/slow.html`` answers only when the server stops, so a client with a short timeout gives up on it.
    """
    requested: list[str] = []
    release = threading.Event()

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            requested.append(self.path)
            if self.path != "/slow.html":
                super().do_GET()
                return
            release.wait(30)
            # The client gave up long ago.
            with suppress(BrokenPipeError, ConnectionResetError):
                super().do_GET()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
    # A short poll interval: shutdown() waits for the serving loop's next poll.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/", requested
    finally:
        release.set()
        server.shutdown()
        server.server_close()
        thread.join()


def with_links(page: Path, *hrefs: str) -> bytes:
    """A real page with links to ``hrefs`` added at the end of its body."""
    raw = page.read_bytes()
    links = "".join(f'<p><a href="{href}">link {n}</a></p>' for n, href in enumerate(hrefs)).encode("ascii")
    at = raw.lower().rfind(b"</body>")
    return raw[:at] + links + raw[at:] if at >= 0 else raw + links


def urlset(*urls: str) -> str:
    entries = "".join(f"<url><loc>{url}</loc></url>" for url in urls)
    return f'<?xml version="1.0" encoding="UTF-8"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{entries}</urlset>'


@dataclass
class Site:
    """The main site and a second one on another port (another site by scheme+host+port)."""

    url: str
    requested: list[str]
    other: str
    other_requested: list[str]

    def page(self, path: str) -> str:
        return self.url + path


@pytest.fixture
def site(tmp_path: Path, documents_dir: Path) -> Iterator[Site]:
    """index -> a, b (depth 1) -> c (depth 2) -> e (depth 3); robots.txt closes /private/; sitemaps; bad pages."""
    docs = documents_dir / UNSTRUCTURED
    main, other = tmp_path / "main", tmp_path / "other"
    (main / "private").mkdir(parents=True)
    other.mkdir()
    (other / "offsite.html").write_bytes((docs / "fake-html.html").read_bytes())  # this site has no robots.txt
    with serve(other) as (other_url, other_requested), serve(main) as (url, requested):
        pages = {
            # The same page linked four ways, a self link, a mailto: link, and links to other sites.
            "index.html": with_links(
                docs / "fake-html.html",
                "a.html#top",
                "./a.html",
                f"{url}a.html",
                "b.html",
                "private/secret.html",
                "missing.html",
                f"{other_url}offsite.html",
                "doc.pdf",
                "index.html",
                "mailto:someone@example.com",
            ),
            "a.html": with_links(docs / "example-with-scripts.html", "c.html", "/index.html", "#part"),
            "b.html": with_links(docs / "fake-html-cp1252.html", "c.html"),
            "c.html": with_links(docs / "example-steelJIS-datasheet.html", "e.html"),
            "e.html": (docs / "example-10k-1p.html").read_bytes(),
            "private/secret.html": (docs / "fake-html.html").read_bytes(),
            "bad.html": with_links(
                docs / "fake-html.html", "missing.html", "slow.html", "binary.html", "picture.png", "a.html"
            ),
            "slow.html": (docs / "fake-html.html").read_bytes(),
            "binary.html": random.Random(0).randbytes(4096),
            # A PNG signature and header: an image, which railgraph does not read.
            "picture.png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(17),
            "doc.pdf": (documents_dir / "pypdf_sample_files" / "minimal-document.pdf").read_bytes(),
            "robots.txt": b"User-agent: *\nDisallow: /private/\n",
        }
        sitemap = urlset(
            f"{url}index.html", f"{url}c.html", f"{url}private/secret.html", f"{url}missing.html", f"{other_url}x"
        )
        pages["sitemap.xml"] = sitemap.encode("utf-8")
        pages["pages"] = sitemap.encode("utf-8")  # a sitemap known by its body alone
        pages["sitemap_index.xml"] = (
            '<?xml version="1.0"?><sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
            f"<sitemap><loc>{url}sitemap.xml</loc></sitemap><sitemap><loc>{url}gone.xml</loc></sitemap>"
            "</sitemapindex>"
        ).encode()
        for name, content in pages.items():
            (main / name).write_bytes(content)
        yield Site(url, requested, other_url, other_requested)


def loaded(units: list[SourceUnit]) -> dict[str, list[Document] | LoadError]:
    """Each unit's Documents, or the LoadError its load() raises, by source."""
    results: dict[str, list[Document] | LoadError] = {}
    for unit in units:
        try:
            results[unit.source] = unit.load()
        except LoadError as error:
            results[unit.source] = error
    return results


def assert_each_path_once(requested: list[str]) -> None:
    counts = Counter(requested)
    assert max(counts.values()) == 1, counts


def test_depth_limit_each_page_once_and_same_site(site: Site) -> None:
    units = list(crawl(site.page("index.html"), max_depth=1))
    sources = [unit.source for unit in units]
    # Breadth-first, in link order; a.html reached by four links is one page; the mailto: link is not followed.
    assert sources == [site.page(p) for p in ("index.html", "a.html", "b.html", "missing.html", "doc.pdf")]
    assert_each_path_once(site.requested)
    assert "/c.html" not in site.requested  # two links away
    assert "/private/secret.html" not in site.requested  # robots.txt
    assert site.other_requested == []  # another site
    deeper = [unit.source for unit in crawl(site.page("index.html"), max_depth=2)]
    assert site.page("c.html") in deeper and site.page("e.html") not in deeper
    assert site.page("e.html") in [unit.source for unit in crawl(site.page("index.html"), max_depth=3)]
    assert [unit.source for unit in crawl(site.page("index.html"), max_depth=0)] == [site.page("index.html")]


def test_other_sites_when_asked(site: Site) -> None:
    units = loaded(list(crawl(site.page("index.html"), max_depth=1, same_site=False)))
    offsite = units[f"{site.other}offsite.html"]
    assert isinstance(offsite, list) and "My First Heading" in offsite[0].page_content
    # Its site has no robots.txt: everything is allowed.
    assert site.other_requested == ["/robots.txt", "/offsite.html"]


def test_page_limit(site: Site) -> None:
    units = list(crawl(site.page("index.html"), max_pages=3))
    assert [unit.source for unit in units] == [site.page(p) for p in ("index.html", "a.html", "b.html")]
    assert sorted(site.requested) == ["/a.html", "/b.html", "/index.html", "/robots.txt"]


def test_page_documents(site: Site) -> None:
    results = loaded(list(crawl(site.page("index.html"), max_depth=1)))
    (page,) = results[site.page("a.html")]
    assert page.metadata == {
        "source": site.page("a.html"),
        "doc_id": page.metadata["doc_id"],
        "page": None,
        "title": ISW_TITLE,
        "type": "html",
    }
    assert re.fullmatch(r"[0-9a-f]{16}", page.metadata["doc_id"])
    assert "jQuery" not in page.page_content and "Belarusian forces remain unlikely" in page.page_content
    # The page keeps its headings for the splitter, as an HTML file does.
    chunks = split_documents([page])
    article = [c.metadata["headings"] for c in chunks if "Belarusian forces remain unlikely" in c.page_content]
    assert article and set(article) == {"Russian Offensive Campaign Assessment, December 13"}
    # A cp1252 page served without a charset is decoded right; with no <title>, the URL is the title.
    (cp1252,) = results[site.page("b.html")]
    assert 'Sie sagte: "Das war köstlich!"' in cp1252.page_content
    assert cp1252.metadata["title"] == site.page("b.html")
    # A linked PDF is read by load_file, under its URL.
    (pdf_page, *_) = results[site.page("doc.pdf")]
    assert pdf_page.metadata["source"] == site.page("doc.pdf")
    assert (pdf_page.metadata["type"], pdf_page.metadata["page"], pdf_page.metadata["title"]) == ("pdf", 1, "doc.pdf")
    assert pdf_page.page_content.strip()
    # Ids are stable from one crawl to the next and differ between pages.
    again = loaded(list(crawl(site.page("a.html"), max_depth=0)))
    assert again[site.page("a.html")][0].metadata["doc_id"] == page.metadata["doc_id"]  # type: ignore[index]
    assert len({docs[0].metadata["doc_id"] for docs in results.values() if isinstance(docs, list)}) == 4


def test_robots_txt(site: Site) -> None:
    secret = site.page("private/secret.html")
    (unit,) = crawl(secret)
    with pytest.raises(LoadError) as caught:
        unit.load()
    assert str(caught.value) == (
        f"{secret}: robots.txt of {site.url} disallows it for user agent 'railgraph'. "
        "crawl another start page, or ignore robots.txt only on a site you run"
    )
    assert "/private/secret.html" not in site.requested
    (unit,) = crawl(secret, respect_robots=False)
    assert "My First Heading" in unit.load()[0].page_content


@pytest.mark.parametrize("sitemap", ["sitemap.xml", "pages", "sitemap_index.xml"])
def test_sitemap(site: Site, sitemap: str) -> None:
    """The sitemap's pages are the crawl: disallowed and off-site ones left out, their links not followed."""
    results = loaded(list(crawl(site.page(sitemap))))
    expected = {site.page(p) for p in ("index.html", "c.html", "missing.html")}
    if sitemap == "sitemap_index.xml":
        expected.add(site.page("gone.xml"))  # a sitemap the index lists that does not exist
        assert str(results[site.page("gone.xml")]).startswith(f"{site.page('gone.xml')}: HTTP 404")
    assert set(results) == expected
    assert isinstance(results[site.page("missing.html")], LoadError)
    assert "/a.html" not in site.requested and "/e.html" not in site.requested
    assert site.other_requested == []
    assert_each_path_once(site.requested)


def test_bad_pages_do_not_stop_the_crawl(site: Site) -> None:
    results = loaded(list(crawl(site.page("bad.html"), max_depth=1, timeout=1)))
    errors = {url.removeprefix(site.url): str(e) for url, e in results.items() if isinstance(e, LoadError)}
    assert errors == {
        "missing.html": f"{site.page('missing.html')}: HTTP 404 File not found. the link is broken: fix or remove it",
        "slow.html": f"{site.page('slow.html')}: no answer within 1 s. the server is slow or down: try again later",
        "binary.html": (
            f"{site.page('binary.html')}: the page cannot be decoded as text (declared charset: none). "
            "the server sends bytes that are not an HTML page; check it in a browser, or leave it out"
        ),
        "picture.png": errors["picture.png"],
    }
    assert errors["picture.png"].startswith(
        f"{site.page('picture.png')}: is image/png, not a web page or a file type railgraph reads. leave the link out"
    )
    # The page linked after the bad ones is crawled all the same.
    assert results[site.page("a.html")][0].metadata["title"] == ISW_TITLE  # type: ignore[index]


def test_unreachable_and_malformed_start() -> None:
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (unit,) = crawl(f"http://127.0.0.1:{port}/docs/")
    with pytest.raises(LoadError, match=r"^http://127\.0\.0\.1:\d+/docs/: cannot connect \(Connection refused\)\. "):
        unit.load()
    (unit,) = crawl("example.com/docs")
    with pytest.raises(LoadError, match=r"^example\.com/docs: not an http:// or https:// URL\. give a full URL"):
        unit.load()


def test_site_scope_and_normalised_urls(site: Site) -> None:
    assert site_scope("HTTP://Example.COM:80/a/b?x=1#frag") == "http://example.com/"
    assert site_scope("https://example.com:443") == "https://example.com/"
    assert site_scope("https://example.com:8443/docs/") == "https://example.com:8443/"
    with pytest.raises(ValueError, match="not an http"):
        site_scope("ftp://example.com/")
    start = site.page("index.html#intro").replace("http://", "HTTP://")
    units = list(crawl(start, max_depth=1))
    assert units[0].source == site.page("index.html")
    assert all(unit.source.startswith(site_scope(start)) for unit in units)
