"""Web pages in: a site crawled breadth-first from a URL, or the pages of a sitemap, one ``SourceUnit`` per page.

LangChain's ``RecursiveUrlLoader`` and ``SitemapLoader`` do not fit: neither reads robots.txt, the recursive loader
walks depth first with no page limit, normalises no URL (``a.html#x`` and ``a.html`` are two pages to it), and a
page that fails is only logged, so an ingest could not report it. The crawler is therefore written here on
``requests`` (the HTTP client LangChain's loaders use) and bs4, and leaves everything else to ``loaders.files``:
encoding detection, HTML to text (``html_to_text``, so pages keep their headings), and ``load_file`` for the
documents a site links to (PDF, DOCX, ...).

Every fetched URL becomes one unit, and a page that cannot be read (HTTP error, timeout, refused connection, a
type railgraph does not read, undecodable text) becomes a unit whose ``load()`` raises ``LoadError`` with the
reason, so the ingest reports it and goes on.
"""

from __future__ import annotations

import logging
import mimetypes
import re
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit
from urllib.robotparser import RobotFileParser

import requests
from bs4 import BeautifulSoup, SoupStrainer
from langchain_core.documents import Document

from loaders.files import (
    _BS_KWARGS,
    SUPPORTED_SUFFIXES,
    LoadError,
    _detect_encoding,
    _looks_binary,
    document_id,
    html_to_text,
    load_file,
)
from loaders.sources import SourceUnit

__all__ = ["crawl", "site_scope"]

logger = logging.getLogger(__name__)

_DEFAULT_PORTS = {"http": 80, "https": 443}
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_SITEMAP_ROOTS = frozenset({"urlset", "sitemapindex"})
# The same limit as load_file's default: past it a response is not read to the end.
_MAX_BYTES = 100 * 1024**2
_READ_CHUNK = 64 * 1024
_CHARSET = re.compile(r"""charset\s*=\s*["']?([\w.:-]+)""", re.IGNORECASE)
_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")
_UNSAFE_NAME = re.compile(r"[^\w.-]+")


def _normalise(url: str) -> str:
    """``url`` with its scheme and host in lower case, without the default port, user info and fragment.

    Raises:
        ValueError: it is not an absolute http(s) URL.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError("not an http:// or https:// URL")
    port = parts.port  # raises ValueError for a port that is not a number from 0 to 65535
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def site_scope(url: str) -> str:
    """The id prefix of every page of ``url``'s site: ``scheme://host[:port]/``, normalised as page ids are.

    Raises:
        ValueError: ``url`` is not an absolute http(s) URL.
    """
    parts = urlsplit(_normalise(url))
    return f"{parts.scheme}://{parts.netloc}/"


# --- units ------------------------------------------------------------------------------------


def _raise(source: str, reason: str, hint: str) -> list[Document]:
    raise LoadError(source, reason, hint)


def _failed(error: LoadError) -> SourceUnit:
    """A unit whose ``load()`` raises ``error`` again (a fresh copy each time, and picklable)."""
    return SourceUnit(error.source, partial(_raise, error.source, error.reason, error.hint))


def _page_documents(url: str, html: str) -> list[Document]:
    """An HTML page as one Document, with the metadata every source has."""
    title, text = html_to_text(html)
    if not text:
        raise LoadError(
            url,
            "the page has no visible text",
            "it is probably built by JavaScript, which the crawler does not run; save the rendered page and ingest it",
        )
    metadata = {"source": url, "doc_id": document_id(url), "page": None, "title": title or url, "type": "html"}
    return [Document(page_content=text, metadata=metadata)]


def _file_name(url: str, suffix: str) -> str:
    """A safe file name for a downloaded document, from the URL's last path segment; it becomes its title."""
    name = _UNSAFE_NAME.sub("_", unquote(PurePosixPath(urlsplit(url).path).name)).strip("._") or "download"
    return name if name.lower().endswith(suffix) else f"{name}{suffix}"


def _file_documents(url: str, body: bytes, suffix: str) -> list[Document]:
    """A linked document (PDF, DOCX, ...) read by ``load_file`` from a temporary copy; its ids are the URL's."""
    with tempfile.TemporaryDirectory(prefix="railgraph-web-") as folder:
        path = Path(folder) / _file_name(url, suffix)
        path.write_bytes(body)
        try:
            docs = load_file(path)
        except LoadError as error:
            raise LoadError(url, error.reason, error.hint) from None
    doc_id = document_id(url)
    for doc in docs:
        doc.metadata.update(source=url, doc_id=doc_id)
    return docs


def _document_suffix(url: str, content_type: str) -> str | None:
    """The ``load_file`` type to read a non-HTML response as: the URL's suffix, else its content type's."""
    suffix = PurePosixPath(urlsplit(url).path).suffix.lower()
    if suffix in SUPPORTED_SUFFIXES:
        return suffix
    return next((s for s in mimetypes.guess_all_extensions(content_type) if s in SUPPORTED_SUFFIXES), None)


# --- parsing ----------------------------------------------------------------------------------


def _links(html: str, page_url: str) -> list[str]:
    """The normalised http(s) URLs that the page's ``<a href>`` point at, relative to its ``<base>``."""
    soup = BeautifulSoup(html, parse_only=SoupStrainer(["a", "base"]), **_BS_KWARGS)
    base = soup.find("base", href=True)
    base_url = urljoin(page_url, str(base["href"]).strip()) if base else page_url
    links: list[str] = []
    for anchor in soup.find_all("a", href=True):
        try:
            links.append(_normalise(urljoin(base_url, str(anchor["href"]).strip())))
        except ValueError:  # mailto:, javascript:, tel:, a malformed port
            continue
    return links


def _sitemap(body: bytes) -> tuple[str, list[str]] | None:
    """``(root, <loc> URLs)`` when ``body`` is a sitemap (``urlset``) or a sitemap index, else None."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    kind = root.tag.rsplit("}", 1)[-1]
    if kind not in _SITEMAP_ROOTS:
        return None
    # Only <url><loc> and <sitemap><loc>: extensions nest their own <loc> (image:loc) deeper.
    locs = [
        child.text.strip()
        for entry in root
        for child in entry
        if child.tag.rsplit("}", 1)[-1] == "loc" and child.text and child.text.strip()
    ]
    return kind, locs


# --- fetching ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Response:
    url: str  # normalised, after redirects
    content_type: str  # media type in lower case, "" when the server sent none
    charset: str | None
    body: bytes


def _status_hint(status: int) -> str:
    if status in (404, 410):
        return "the link is broken: fix or remove it"
    if status in (401, 403):
        return "the page needs a login or is closed to crawlers: leave it out"
    if status == 429:
        return "the server is limiting requests: try again later"
    if status >= 500:
        return "the server failed: try again later"
    return "check the URL in a browser"


def _connection_problem(exc: requests.ConnectionError) -> str:
    """The operating system's words for a failed connection ("Connection refused"), not urllib3's nesting."""
    text = str(exc)
    if found := _ERRNO.search(text):
        return found.group(1).strip()
    return "timed out" if "timed out" in text else type(exc).__name__


class _Crawler:
    """One crawl's session, robots.txt rules per site, and the time of the last request to each site."""

    def __init__(self, session: requests.Session, *, respect_robots: bool, timeout: float, user_agent: str) -> None:
        self.session = session
        self.respect_robots = respect_robots
        self.timeout = timeout
        self.user_agent = user_agent
        self._robots: dict[str, RobotFileParser] = {}
        self._last_request: dict[str, float] = {}

    def allowed(self, url: str) -> bool:
        """Whether robots.txt lets this crawler fetch ``url`` (always, when robots are not respected)."""
        if not self.respect_robots:
            return True
        return self._rules(site_scope(url)).can_fetch(self.user_agent, url)

    def _rules(self, site: str) -> RobotFileParser:
        if (rules := self._robots.get(site)) is not None:
            return rules
        rules = self._robots[site] = RobotFileParser(f"{site}robots.txt")
        try:
            response = self.session.get(rules.url, timeout=self.timeout)
        except requests.RequestException:
            # Unreachable: the page requests fail the same way and their units say why.
            rules.allow_all = True
            return rules
        status = response.status_code
        # RFC 9309: a missing robots.txt allows all; an unavailable one (5xx) allows nothing, as 401/403 do.
        if status in (401, 403) or status >= 500:
            rules.disallow_all = True
        elif status >= 400:
            rules.allow_all = True
        else:
            rules.parse(response.content.decode("utf-8", errors="replace").splitlines())
        return rules

    def _wait_turn(self, site: str) -> None:
        """Sleep out robots.txt's Crawl-delay since the last request to ``site``."""
        rules = self._robots.get(site)
        delay = rules.crawl_delay(self.user_agent) if self.respect_robots and rules is not None else None
        last = self._last_request.get(site)
        if delay and last is not None:
            time.sleep(max(0.0, float(delay) - (time.monotonic() - last)))
        self._last_request[site] = time.monotonic()

    def fetch(self, url: str) -> _Response:
        """GET ``url``, following redirects.

        Raises:
            LoadError: an HTTP error status, a timeout, no connection, or a body over the size limit.
        """
        self._wait_turn(site_scope(url))
        try:
            with self.session.get(url, timeout=self.timeout, stream=True) as response:
                if response.status_code >= 400:
                    reason = f"HTTP {response.status_code} {response.reason or ''}".strip()
                    raise LoadError(url, reason, _status_hint(response.status_code))
                body = bytearray()
                for piece in response.iter_content(_READ_CHUNK):
                    body += piece
                    if len(body) > _MAX_BYTES:
                        raise LoadError(
                            url,
                            f"the response is over the {_MAX_BYTES // 1024**2} MiB limit",
                            "download it and ingest the file, or leave it out",
                        )
                header = response.headers.get("Content-Type", "")
                charset = _CHARSET.search(header)
                return _Response(
                    url=_normalise(response.url),
                    content_type=header.split(";", 1)[0].strip().lower(),
                    charset=charset.group(1) if charset else None,
                    body=bytes(body),
                )
        except requests.Timeout as exc:
            raise LoadError(
                url, f"no answer within {self.timeout:g} s", "the server is slow or down: try again later"
            ) from exc
        except requests.TooManyRedirects as exc:
            raise LoadError(url, "too many redirects", "open it in a browser to see where it loops") from exc
        except requests.ConnectionError as exc:
            raise LoadError(
                url, f"cannot connect ({_connection_problem(exc)})", "check the URL and that the site is up"
            ) from exc
        except requests.RequestException as exc:
            raise LoadError(url, f"the request failed ({type(exc).__name__}: {exc})", "check the URL") from exc


def _decoded(raw: bytes, encoding: str | None) -> str | None:
    """``raw`` decoded, or None when ``encoding`` is unknown, does not decode it, or gives binary junk."""
    if encoding is None:
        return None
    try:
        text = raw.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return None
    return None if _looks_binary(text) else text


def _html(response: _Response) -> str:
    """The page's text: decoded by the charset the server declared if that works, else as HTML files are.

    Raises:
        LoadError: no encoding gives text.
    """
    raw = response.body
    text = _decoded(raw, response.charset)
    if text is None:
        text = _decoded(raw, _detect_encoding(raw, html=True))
    if text is None:
        raise LoadError(
            response.url,
            f"the page cannot be decoded as text (declared charset: {response.charset or 'none'})",
            "the server sends bytes that are not an HTML page; check it in a browser, or leave it out",
        )
    return text


# --- the crawl --------------------------------------------------------------------------------


def crawl(
    start_url: str,
    *,
    max_depth: int = 2,
    max_pages: int = 50,
    same_site: bool = True,
    respect_robots: bool = True,
    timeout: float = 10.0,
    user_agent: str = "railgraph",
) -> Iterator[SourceUnit]:
    """The pages of a site as units, breadth-first from ``start_url``, each URL fetched once.

    ``start_url`` is a page, whose links are followed up to ``max_depth`` links away (0: the page alone), or a
    sitemap (a URL ending in ``.xml``, or whose body is a ``<urlset>`` or ``<sitemapindex>``), whose ``<loc>``
    pages are the crawl (their links are not followed). At most ``max_pages`` units are yielded. URLs are
    normalised (scheme and host in lower case, no default port, no fragment); a unit's ``source`` is its page's
    URL after redirects. Only the start's site (scheme, host and port, see ``site_scope``) is crawled unless
    ``same_site`` is False, and ``respect_robots`` keeps to each site's robots.txt, its Crawl-delay included
    (a missing robots.txt allows all); the pages it disallows are left out, a disallowed start is reported.

    A page's Documents have ``source``, ``doc_id`` (from the URL), ``title`` (``<title>``, else the URL),
    ``type`` "html" and ``page`` None, and its text from ``loaders.files.html_to_text`` (headings kept). A linked
    file of a type ``load_file`` reads (PDF, DOCX, ...) is loaded by it. A URL that cannot be read (HTTP error,
    timeout, refused, another type, undecodable) is a unit whose ``load()`` raises ``LoadError``; the crawl goes
    on. Requests are made as the crawl is iterated, with ``timeout`` seconds each and ``user_agent``.
    """
    try:
        start = _normalise(start_url)
    except ValueError as exc:
        yield _failed(LoadError(start_url, str(exc), "give a full URL, such as https://example.com/docs/"))
        return
    with requests.Session() as session:
        session.headers["User-Agent"] = user_agent
        crawler = _Crawler(session, respect_robots=respect_robots, timeout=timeout, user_agent=user_agent)
        yield from _crawl(crawler, start, max_depth=max_depth, max_pages=max_pages, same_site=same_site)


def _sitemap_pages(
    crawler: _Crawler, sitemap: tuple[str, list[str]], seen: set[str], site: str | None, max_pages: int
) -> tuple[list[str], list[SourceUnit]]:
    """The page URLs a sitemap lists (a sitemap index's sitemaps read in turn), and units for unreadable sitemaps.

    Pages outside ``site`` (when given) are left out, as are sitemaps robots.txt disallows.
    """
    pages: list[str] = []
    failures: list[SourceUnit] = []
    pending = deque([sitemap])
    while pending and len(pages) < max_pages:
        kind, locs = pending.popleft()
        for loc in locs:
            try:
                url = _normalise(loc)
            except ValueError:
                continue
            if url in seen or (site is not None and not url.startswith(site)):
                continue
            seen.add(url)
            if kind == "urlset":
                pages.append(url)
                if len(pages) == max_pages:
                    break
            elif crawler.allowed(url):
                try:
                    nested = _sitemap(crawler.fetch(url).body)
                except LoadError as error:
                    failures.append(_failed(error))
                    continue
                if nested is None:
                    error = LoadError(url, "is not a sitemap", "fix the sitemap index that lists it")
                    failures.append(_failed(error))
                else:
                    pending.append(nested)
    return pages, failures


def _is_html(response: _Response) -> bool:
    if response.content_type:
        return response.content_type in _HTML_TYPES
    # No declared type: the start of the body decides.
    return response.body.lstrip()[:64].lower().startswith((b"<!doctype html", b"<html"))


def _other_unit(response: _Response) -> SourceUnit:
    """A response that is not a page: a document ``load_file`` reads, else a failure naming its type."""
    suffix = _document_suffix(response.url, response.content_type)
    if suffix is None:
        found = response.content_type or "of no declared type"
        return _failed(
            LoadError(
                response.url,
                f"is {found}, not a web page or a file type railgraph reads",
                f"leave the link out; pages and {', '.join(sorted(SUPPORTED_SUFFIXES))} files are read",
            )
        )
    return SourceUnit(response.url, partial(_file_documents, response.url, response.body, suffix))


def _crawl(crawler: _Crawler, start: str, *, max_depth: int, max_pages: int, same_site: bool) -> Iterator[SourceUnit]:
    site = site_scope(start)
    seen = {start}
    # (url, how many more links away from it pages may be followed)
    queue: deque[tuple[str, int]] = deque([(start, max_depth)])
    yielded = 0
    while queue and yielded < max_pages:
        url, links_left = queue.popleft()
        if not crawler.allowed(url):
            logger.info("%s: left out, robots.txt disallows it", url)
            if url == start:
                yielded += 1
                yield _failed(
                    LoadError(
                        url,
                        f"robots.txt of {site} disallows it for user agent {crawler.user_agent!r}",
                        "crawl another start page, or ignore robots.txt only on a site you run",
                    )
                )
            continue
        html: str | None = None
        try:
            response = crawler.fetch(url)
            if response.url != url:
                if url != start and response.url in seen:  # the same page under another URL: fetched once
                    continue
                seen.add(response.url)
            if url == start:
                # A start that redirects (http -> https, another host) moves the site with it.
                site = site_scope(response.url)
                if (sitemap := _sitemap(response.body)) is not None:
                    pages, failures = _sitemap_pages(crawler, sitemap, seen, site if same_site else None, max_pages)
                    for failure in failures[: max_pages - yielded]:
                        yielded += 1
                        yield failure
                    queue.extend((page, 0) for page in pages)
                    continue
                if urlsplit(url).path.endswith(".xml"):
                    raise LoadError(url, "is not a sitemap", "give the URL of the site's sitemap.xml")
            elif same_site and not response.url.startswith(site):
                raise LoadError(url, f"redirects to {response.url}, outside {site}", "crawl that site on its own")
            if _is_html(response):
                html = _html(response)
        except LoadError as error:
            yielded += 1
            yield _failed(error)
            continue
        yielded += 1
        if html is None:
            yield _other_unit(response)
            continue
        yield SourceUnit(response.url, partial(_page_documents, response.url, html))
        if links_left > 0:
            for link in _links(html, response.url):
                if link not in seen and (not same_site or link.startswith(site)):
                    seen.add(link)
                    queue.append((link, links_left - 1))
