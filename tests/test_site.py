"""The built book (`_build/html`) opened page by page in headless Chromium through Playwright.

For every page: no console errors or uncaught exceptions from the site's own files, every <img>
decodes with a non-zero size, every internal link leads to an existing file and its #anchor to
an element of that page, and each chapter links to its own notebook in Colab (badge and launch
button). A full-page screenshot of each page lands in `_build/screenshots/` for a human to read.
In each chapter at 1280 px, no code block of at most 100 columns scrolls sideways, and a probe
line of exactly 100 fits. Chapters whose cells display Markdown tables (IPython.display.Markdown)
must show them as <table> elements, not as the raw pipe text myst-nb makes of them by default.

The browser is the system's Chromium (`apt-get install chromium`), driven by the `playwright`
package from PyPI; Playwright's own browser download is never used. There is no internet in CI,
so requests to other hosts are blocked and not counted (MathJax comes from a CDN: math is not
rendered in these screenshots). Without a built site or a Chromium the tests skip, saying why;
with T5EDU_SITE_REQUIRED=1 (as in .ci/run) they fail instead. T5EDU_SITE_DIR and T5EDU_CHROMIUM
override the site directory and the browser.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SITE = Path(os.environ.get("T5EDU_SITE_DIR", ROOT / "_build" / "html")).resolve()
SCREENSHOTS = SITE.parent / "screenshots"
CHROMIUM = Path(os.environ.get("T5EDU_CHROMIUM", "/usr/bin/chromium"))
REQUIRED = os.environ.get("T5EDU_SITE_REQUIRED") == "1"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NOT_PAGES = ("_static", "_sources", "_images", "_downloads")  # assets, not pages
CHAPTER = re.compile(r"chapters/(\d\d_[a-z0-9_]+)\.html")
NO_SITE = "(site not built)"


def _pages() -> list[str]:
    if not (SITE / "index.html").is_file():
        return [NO_SITE]
    return sorted(
        p.relative_to(SITE).as_posix()
        for p in SITE.rglob("*.html")
        if p.relative_to(SITE).parts[0] not in NOT_PAGES
    )


def _colab_base() -> str:
    """https://colab.research.google.com/github/OWNER/REPO/blob/BRANCH/ from _config.yml."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    repo = config["repository"]
    owner_repo = urlsplit(repo["url"]).path.strip("/")
    colab = config["launch_buttons"]["colab_url"].rstrip("/")
    return f"{colab}/github/{owner_repo}/blob/{repo.get('branch', 'main')}/"


def _unavailable(reason: str):
    if REQUIRED:
        pytest.fail(f"{reason} (T5EDU_SITE_REQUIRED=1)")
    pytest.skip(reason)


class _Ids(HTMLParser):
    """Collects every id (and legacy <a name>) of a page: the targets a #fragment can reach."""

    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if value and (name == "id" or (tag == "a" and name == "name")):
                self.ids.add(value)


@functools.cache
def _ids_of(path: Path) -> frozenset[str]:
    parser = _Ids()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return frozenset(parser.ids)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # keep pytest's output clean
        pass


@pytest.fixture(scope="module")
def base_url():
    if not (SITE / "index.html").is_file():
        _unavailable(
            f"the book is not built: {SITE / 'index.html'} is missing; build it with "
            "`jupyter-book build .` first"
        )
    handler = functools.partial(_QuietHandler, directory=str(SITE))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser(base_url):
    if not CHROMIUM.exists():
        _unavailable(f"no Chromium at {CHROMIUM}; install it with `apt-get install chromium`")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the `playwright` package is not installed (`pip install playwright`)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


def _is_local(url: str, base_url: str) -> bool:
    return url.startswith(base_url + "/") or url == base_url


# Run in the page: every <img>, forced to load now (lazy images would otherwise wait for a
# scroll), then its decoded size. decode() rejects for a broken image; 10 s guards a stall.
_IMAGES_JS = """
async () => Promise.all([...document.images].map(async (img) => {
  img.loading = "eager";
  let error = "";
  try {
    await Promise.race([
      img.decode(),
      new Promise((_, reject) => setTimeout(() => reject(new Error("timeout")), 10000)),
    ]);
  } catch (e) { error = String(e); }
  return {src: img.currentSrc || img.src, width: img.naturalWidth, height: img.naturalHeight,
          error: error};
}))
"""

_LINKS_JS = """
() => [...document.querySelectorAll("a[href]")].map((a) => ({
  raw: a.getAttribute("href"), href: a.href, text: a.textContent.trim().slice(0, 60),
  in_article: a.closest("article, .bd-article") !== null,
  launch: a.closest(".dropdown-launch-buttons, [class*='launch']") !== null,
}))
"""


# Run in a chapter at 1280 px: the code blocks of its cells (inputs and outputs) whose longest
# line has at most 100 characters (ruff's line length) but that scroll sideways, and a probe: a
# copy of the first input block holding one 100-character line, which must not scroll either.
_WIDTH_JS = """
() => {
  const blocks = [...document.querySelectorAll("div.cell div.highlight pre, div.cell_output pre")];
  const scrolls = (pre) => pre.scrollWidth > pre.clientWidth;
  const longest = (pre) => Math.max(...pre.textContent.split("\\n").map((l) => l.length));
  const bad = blocks.filter((pre) => longest(pre) <= 100 && scrolls(pre))
    .map((pre) => `${longest(pre)} columns, ${pre.scrollWidth} px in ${pre.clientWidth} px: `
      + pre.textContent.split("\\n").find((l) => l.length === longest(pre)).slice(0, 50));
  const first = document.querySelector("div.cell div.cell_input div.highlight pre");
  let probe = null;
  if (first) {
    const copy = first.cloneNode(false);
    copy.textContent = "x = 1  # " + "0123456789".repeat(10).slice(0, 91);
    first.after(copy);
    probe = {columns: copy.textContent.length, scroll: copy.scrollWidth, client: copy.clientWidth,
             font: getComputedStyle(copy).fontSize};
    copy.remove();
  }
  return {bad: bad, probe: probe};
}
"""


def _short(src: str) -> str:
    return src if not src.startswith("data:") else src[:40] + "..."


@pytest.mark.parametrize("page_path", _pages())
def test_page(page_path, base_url, browser):
    assert page_path != NO_SITE  # unreachable: base_url skips or fails first
    url = f"{base_url}/{page_path}"
    problems: list[str] = []
    console_errors: list[str] = []

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()

    def on_console(message):
        origin = message.location.get("url", "") if message.location else ""
        if message.type == "error" and (not origin or _is_local(origin, base_url)):
            if "ERR_FAILED" in message.text and not _is_local(origin, base_url):
                return  # the blocked request of another host
            console_errors.append(f"{message.text} (at {origin or 'unknown'})")

    def on_response(response):
        if _is_local(response.url, base_url) and response.status >= 400:
            problems.append(f"local asset {response.url} answered HTTP {response.status}")

    def on_failed(request):
        if _is_local(request.url, base_url):
            problems.append(f"local request {request.url} failed: {request.failure}")

    # No internet: requests to other hosts (CDNs) are blocked, and their failures not counted.
    page.route(re.compile(r"^(?!" + re.escape(base_url) + r"/)[a-z]+://"), lambda r: r.abort())
    page.on("console", on_console)
    page.on("pageerror", lambda error: console_errors.append(f"uncaught exception: {error}"))
    page.on("response", on_response)
    page.on("requestfailed", on_failed)
    try:
        response = page.goto(url, wait_until="load", timeout=60_000)
        assert response is not None and response.ok, f"{page_path} did not load: {response}"
        page.wait_for_load_state("networkidle", timeout=30_000)

        for image in page.evaluate(_IMAGES_JS):
            if not (image["src"].startswith("data:") or _is_local(image["src"], base_url)):
                problems.append(
                    f"image {image['src']} is on another host: it cannot be checked offline and "
                    "breaks without a network; ship it in the book or as a data: URI"
                )
            elif image["width"] == 0 or image["height"] == 0 or image["error"]:
                problems.append(
                    f"image {_short(image['src'])} does not decode "
                    f"({image['width']}x{image['height']}, {image['error'] or 'zero size'})"
                )

        links = page.evaluate(_LINKS_JS)
        for link in links:
            problems.extend(_check_link(link, page_path, base_url))

        chapter = CHAPTER.fullmatch(page_path)
        if chapter:
            colab = _colab_base() + f"chapters/{chapter.group(1)}.ipynb"
            to_colab = [link for link in links if link["href"] == colab]
            if not any(link["in_article"] for link in to_colab):
                problems.append(f"no 'Open in Colab' badge linking to {colab} in the chapter")
            if not any(not link["in_article"] for link in to_colab):
                problems.append(f"no Colab launch button linking to {colab}")
            wrong = {
                link["href"]
                for link in links
                if "colab.research.google.com/github" in link["href"] and link["href"] != colab
            }
            problems.extend(f"Colab link to another notebook: {href}" for href in sorted(wrong))

            # t5edu.css promises 100 columns of code without sideways scrolling at this width.
            width = page.evaluate(_WIDTH_JS)
            probe = width["probe"]
            if probe and probe["scroll"] > probe["client"]:
                problems.append(
                    f"a {probe['columns']}-column code line needs {probe['scroll']} px but the "
                    f"block is {probe['client']} px wide at 1280 px (font {probe['font']}): "
                    "t5edu.css must fit 100 columns"
                )
            problems.extend(f"code block scrolls sideways: {b}" for b in width["bad"])

        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        name = page_path.removesuffix(".html").replace("/", "__") + ".png"
        page.evaluate("document.fonts.ready.then(() => undefined)")
        page.screenshot(path=str(SCREENSHOTS / name), full_page=True, animations="disabled")
    finally:
        context.close()

    problems.extend(f"console error: {error}" for error in console_errors)
    assert not problems, f"{page_path}:\n  " + "\n  ".join(problems)


def _check_link(link: dict, page_path: str, base_url: str) -> list[str]:
    """Problems with one <a href>: a missing file, or a #fragment with no such id there."""
    href, label = link["href"], f"link {link['raw']!r} ({link['text']!r})"
    if not _is_local(href, base_url):
        return []  # another host, mailto:, javascript:: not checkable offline
    parts = urlsplit(href)
    target = SITE / unquote(parts.path).lstrip("/")
    if parts.path.endswith("/") or target.is_dir():
        target = target / "index.html"
    if not target.resolve().is_relative_to(SITE) or not target.is_file():
        return [f"{label} on {page_path} leads to a missing file {target.relative_to(SITE)}"]
    fragment = unquote(parts.fragment)
    if fragment and target.suffix == ".html" and fragment not in _ids_of(target):
        where = target.relative_to(SITE).as_posix()
        return [f"{label} on {page_path}: no element with id {fragment!r} on {where}"]
    return []


# A Markdown table's delimiter row: | --- | :-: | ... (what the tables' Markdown holds).
_DELIMITER_ROW = re.compile(r"^\|(?:\s*:?-+:?\s*\|)+\s*$", re.M)
# The same row once rendered as text: Sphinx's smartquotes turn "---" into dashes.
_RAW_DELIMITER_ROW = re.compile(r"^(?:<p>)?\|(?:\s*:?[-\u2013\u2014]+:?\s*\|)+\s*$", re.M)
_PRE = re.compile(r"<pre\b.*?</pre>", re.S)  # printed text (stream outputs) may hold pipes


def _markdown_tables(notebook: Path) -> int:
    """Tables in a notebook's Markdown cells and in the text/markdown its cells display."""
    count = 0
    for cell in json.loads(notebook.read_text(encoding="utf-8"))["cells"]:
        if cell["cell_type"] == "markdown":
            count += len(_DELIMITER_ROW.findall("".join(cell["source"])))
        for output in cell.get("outputs", []):
            text = output.get("data", {}).get("text/markdown")
            if text:
                count += len(_DELIMITER_ROW.findall("".join(text)))
    return count


@pytest.mark.parametrize("chapter", ["03_t5_architecture", "12_benchmarks"])
def test_displayed_tables_render(chapter):
    """Chapter 3's preset table and chapter 12's results tables are displayed Markdown: each
    must become a <table>, and no pipe-table text may be left outside printed (<pre>) output."""
    page = SITE / "chapters" / f"{chapter}.html"
    if not page.is_file():
        _unavailable(
            f"the book is not built: {page} is missing; build it with `jupyter-book build .`"
        )
    html = page.read_text(encoding="utf-8")
    expected = _markdown_tables(ROOT / "chapters" / f"{chapter}.ipynb")
    assert expected > 0, f"chapters/{chapter}.ipynb displays no Markdown table: update this test"
    found = len(re.findall(r"<table\b", html))
    raw = _RAW_DELIMITER_ROW.findall(_PRE.sub("", html))
    assert not raw and found >= expected, (
        f"{page.relative_to(SITE)}: {found} <table> for the notebook's {expected} Markdown tables, "
        f"and {len(raw)} left as raw pipe text (first: {raw[:1]}); displayed Markdown needs "
        "`nb_render_markdown_format: myst` (_config.yml), and a '|' inside a cell must be escaped "
        "as '\\|' or the row has more columns than the header"
    )


def test_book_config_reaches_myst_nb():
    """The settings above, as Jupyter Book hands them to myst-nb: displayed Markdown parsed as
    MyST (tables), and a cell that raises or times out failing `jupyter-book build` (exit 1)
    rather than a warning. A misspelt or misplaced key in _config.yml would be dropped silently.
    Verified on throwaway notebooks (raise; time.sleep past the timeout): exit 0 without
    raise_on_error, exit 1 with it."""
    config = pytest.importorskip("jupyter_book.config")
    sphinx_config, _ = config.get_final_config(
        user_yaml=ROOT / "_config.yml",
        cli_config={"globaltoc_path": str(ROOT / "_toc.yml"), "latex_individualpages": False},
        sourcedir=ROOT,
    )
    got = {
        key: sphinx_config.get(key)
        for key in (
            "nb_render_markdown_format",
            "nb_execution_raise_on_error",
            "nb_execution_allow_errors",
        )
    }
    assert got == {
        "nb_render_markdown_format": "myst",
        "nb_execution_raise_on_error": True,
        "nb_execution_allow_errors": False,
    }, f"_config.yml gives myst-nb {got}"
    assert isinstance(sphinx_config.get("nb_execution_timeout"), int), sphinx_config.get(
        "nb_execution_timeout"
    )
