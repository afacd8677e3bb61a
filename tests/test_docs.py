"""The README stays short and the docs/ site stays whole: the README fits on a screen or two and names
the commands; every protocol section the code cites exists in docs/protocols.md; every page is in
mkdocs.yml's nav and every nav entry is a page; the README's links into docs/ resolve. Fast checks
only: `make test` runs `mkdocs build --strict` (broken links and anchors inside docs/) before pytest."""

import re
import unicodedata
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MKDOCS = ROOT / "mkdocs.yml"
PROTOCOLS = DOCS / "protocols.md"

README_MAX_LINES = 150
# where the code lives (the citations the issue is about), and the other text files that cite sections
CODE_DIRS = ("models", "assets", "orchestration", "sql", "benchmarks")
OTHER_DIRS = ("tests", "config", "deploy")
CODE_SUFFIXES = {".py", ".sql"}
OTHER_SUFFIXES = {".py", ".sql", ".yaml", ".yml"}
# "PROTOCOLS section 4", "PROTOCOLS sections 3 and 7", "PROTOCOLS 8", "docs/protocols.md section 4",
# also wrapped over a line break and a comment marker ("(PROTOCOLS\n# section 3)")
_GAP = r"(?:\s|#|--)+"
CITATION = re.compile(
    r"(?:\bPROTOCOLS|docs/protocols\.md)(?:'s)?" + _GAP
    + r"(?:sections?" + _GAP + r")?(\d+(?:\s*(?:,|and|&)\s*\d+)*)\b")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _citations(dirs, suffixes):
    """{(file, line): [section numbers]} for every protocol citation in those folders' files."""
    found = {}
    for folder in dirs:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix not in suffixes or not path.is_file() or path == Path(__file__).resolve():
                continue
            if any(part in {"__pycache__", ".venv"} for part in path.parts):
                continue
            text = path.read_text(errors="replace")
            for match in CITATION.finditer(text):
                line = text.count("\n", 0, match.start()) + 1
                numbers = [int(n) for n in re.findall(r"\d+", match.group(1))]
                found[(str(path.relative_to(ROOT)), line)] = numbers
    return found


def _protocol_sections():
    return {int(n) for n in re.findall(r"^## (\d+)\. ", PROTOCOLS.read_text(), flags=re.M)}


def _slug(title):
    """Python-Markdown's toc slug (the anchors mkdocs makes), or the heading's explicit {#id}."""
    explicit = re.search(r"\{\s*#([\w-]+)[^}]*\}\s*$", title)
    if explicit:
        return explicit.group(1)
    title = re.sub(r"`|\*\*|\*", "", title)
    title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
    title = re.sub(r"[^\w\s-]", "", title).strip().lower()
    return re.sub(r"[-\s]+", "-", title)


def _anchors(page):
    anchors, fence = set(), False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fence = not fence
        elif not fence and re.match(r"#{1,6} ", line):
            anchors.add(_slug(line.lstrip("#").strip()))
    return anchors


def _nav_pages(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for item in node:
            yield from _nav_pages(item)
    elif isinstance(node, dict):
        for value in node.values():
            yield from _nav_pages(value)


def test_the_readme_fits_on_a_screen_or_two_and_names_the_commands():
    text = README.read_text()
    lines = text.splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move the detail to a page of docs/")
    for command in ("make demo", "make test", "make ui", "make docs"):
        assert command in text, f"README.md does not name `{command}`"


def test_every_protocol_section_the_code_cites_exists():
    sections = _protocol_sections()
    assert sections >= set(range(1, 9)), f"docs/protocols.md lacks numbered sections: has {sorted(sections)}"
    code = _citations(CODE_DIRS, CODE_SUFFIXES)
    assert code, "no `PROTOCOLS section N` / `docs/protocols.md section N` citation found in the code"
    cited = {**code, **_citations(OTHER_DIRS, OTHER_SUFFIXES)}
    missing = {f"{file}:{line}": n for (file, line), numbers in cited.items() for n in numbers if n not in sections}
    assert not missing, f"cited protocol sections with no `## N.` heading in docs/protocols.md: {missing}"


def test_the_citation_pattern_reads_every_form():
    text = ('"""Scoring (PROTOCOLS\nsection 3), the merge (PROTOCOLS sections 3 and 7), TASKS  # PROTOCOLS 8\n'
            "-- docs/protocols.md section 4\n# wrapped (docs/protocols.md\n# section 5)\nPROTOCOLS = ('a',)")
    assert [m.group(1) for m in CITATION.finditer(text)] == ["3", "3 and 7", "8", "4", "5"]


def test_every_docs_page_is_in_the_nav_and_every_nav_entry_exists():
    config = yaml.safe_load(MKDOCS.read_text())
    assert config.get("docs_dir", "docs") == "docs"
    assert config["theme"]["name"] == "material"
    nav = list(_nav_pages(config["nav"]))
    assert len(nav) == len(set(nav)), f"a page is twice in the nav: {nav}"
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert not set(nav) - pages, f"nav entries with no page: {sorted(set(nav) - pages)}"
    assert not pages - set(nav), f"pages missing from mkdocs.yml's nav: {sorted(pages - set(nav))}"


def test_the_readme_links_resolve():
    links = [target for target in LINK.findall(README.read_text()) if not re.match(r"[a-z]+:", target)]
    to_docs = [target for target in links if target.startswith("docs/")]
    assert to_docs, "README.md links to no page of docs/"
    for target in links:
        path, _, anchor = target.partition("#")
        if not path:
            continue
        assert (ROOT / path).exists(), f"README.md links to {target}, which does not exist"
        if anchor and path.endswith(".md") and path.startswith("docs/"):
            assert anchor in _anchors(ROOT / path), f"README.md links to {target}: no such heading in {path}"


@pytest.mark.parametrize("page,start,end", [
    ("reference/config-keys.md", "<!-- config-schema:start -->", "<!-- config-schema:end -->"),
    ("reference/profile-keys.md", "<!-- profile-schema:start -->", "<!-- profile-schema:end -->"),
])
def test_the_generated_tables_have_their_markers_once(page, start, end):
    text = (DOCS / page).read_text()
    assert text.count(start) == 1 and text.count(end) == 1 and text.index(start) < text.index(end)
