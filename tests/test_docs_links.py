"""The README and docs/ stand on their own: every link resolves inside this repository or is a public website.

A relative link must name a file or folder of the repository (not one outside it, such as
`../elsewhere/DESIGN.md`, and not a git-ignored one such as `data/`), and an `#anchor` must
name a heading of the Markdown file it points at. An absolute link must be a public
http(s) address, not a local one. Run `python tests/test_docs_links.py` to list the problems.
"""

from __future__ import annotations

import re
import subprocess
import sys
import unicodedata
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
PUBLIC_SCHEMES = {"http", "https", "mailto"}
LOCAL_HOSTS = re.compile(r"^(localhost|127(\.\d+){3}|0\.0\.0\.0|\[::1\]|10(\.\d+){3}|192\.168(\.\d+){2})$|\.local$")

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,}).*?^ {0,3}\1[ \t]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+)(?!`).+?(?<!`)\1(?!`)", re.DOTALL)
_INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
_REFERENCE_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
_HTML_LINK = re.compile(r"<(?:a|img)\b[^>]*?\b(?:href|src)\s*=\s*[\"']([^\"']*)[\"']", re.IGNORECASE)
_HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_HTML_ANCHOR = re.compile(r"<a\b[^>]*\b(?:name|id)\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)


def doc_files() -> list[Path]:
    """The README and every Markdown page under docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _without_code(text: str) -> str:
    """The text with fenced blocks and code spans blanked: links shown as code are not links."""
    text = _FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    return _CODE_SPAN.sub("code", text)


def links(text: str) -> list[str]:
    """Every link target of a Markdown text: inline links and images, reference definitions, HTML href/src."""
    prose = _without_code(text)
    return [m.group(1) for pattern in (_INLINE_LINK, _REFERENCE_DEF, _HTML_LINK) for m in pattern.finditer(prose)]


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").strip().lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LNM")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors a Markdown file offers: its headings' slugs (repeats numbered as GitHub does) and HTML ids."""
    text = path.read_text(encoding="utf-8")
    found: set[str] = set(_HTML_ANCHOR.findall(text))
    seen: dict[str, int] = {}
    for heading in _HEADING.findall(_FENCE.sub("", text)):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def _git_ignored(paths: list[Path]) -> set[Path]:
    """Which of `paths` git ignores (not in a fresh clone); nothing when git is unavailable."""
    if not paths:
        return set()
    try:
        done = subprocess.run(
            ["git", "-C", str(ROOT), "check-ignore", "--stdin"],
            input="\n".join(str(p) for p in paths),
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return set()
    if done.returncode not in (0, 1):  # 1: nothing ignored; anything else: not a git checkout
        return set()
    return {Path(line) for line in done.stdout.splitlines() if line}


def problems(pages: dict[Path, str] | None = None) -> list[str]:
    """One line per broken link in `pages` (path -> text; default: the README and docs/): file, target, what is wrong."""
    if pages is None:
        pages = {doc: doc.read_text(encoding="utf-8") for doc in doc_files()}
    found: list[str] = []
    local: list[tuple[Path, str, Path]] = []
    for doc, text in pages.items():
        where = doc.relative_to(ROOT)
        for target in links(text):
            parts = urlsplit(target)
            if not target:
                found.append(f"{where}: empty link target")
            elif parts.scheme:
                if parts.scheme.lower() not in PUBLIC_SCHEMES:
                    found.append(f"{where}: {target}: not a public web link (scheme {parts.scheme!r})")
                elif parts.scheme.lower() != "mailto" and (not parts.hostname or LOCAL_HOSTS.search(parts.hostname)):
                    found.append(f"{where}: {target}: not a public website")
            elif target.startswith("//"):
                found.append(f"{where}: {target}: protocol-relative link; write https://")
            elif target.startswith("/"):
                found.append(f"{where}: {target}: absolute path; use a path relative to {where}")
            else:
                path = (doc.parent / unquote(parts.path)).resolve() if parts.path else doc
                if not path.is_relative_to(ROOT):
                    found.append(f"{where}: {target}: points outside the repository")
                elif not path.exists():
                    found.append(f"{where}: {target}: no such file in the repository")
                else:
                    local.append((doc, target, path))
                    if parts.fragment and path.suffix.lower() == ".md" and unquote(parts.fragment) not in anchors(path):
                        found.append(f"{where}: {target}: no heading with anchor #{parts.fragment} in {path.relative_to(ROOT)}")
    ignored = _git_ignored(sorted({path for _, _, path in local}))
    found += [
        f"{doc.relative_to(ROOT)}: {target}: git ignores it, so a fresh clone does not have it"
        for doc, target, path in local
        if path in ignored
    ]
    return found


def test_readme_and_docs_exist():
    assert (ROOT / "README.md").is_file()
    assert (ROOT / "docs" / "README.md").is_file()


def test_every_readme_and_docs_link_resolves_in_the_repository_or_is_public():
    assert problems() == []


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ("../elsewhere/DESIGN.md", "outside the repository"),
        ("docs/missing.md", "no such file"),
        ("/etc/passwd", "absolute path"),
        ("file:///tmp/x.md", "not a public web link"),
        ("http://127.0.0.1:3000", "not a public website"),
        ("README.md#no-such-heading", "no heading with anchor"),
        ("data/warehouse.duckdb", None),  # git-ignored or missing: either way not in a fresh clone
    ],
)
def test_the_checker_catches_broken_links(target, problem):
    found = problems({ROOT / "README.md": f"See [this]({target}).\n"})
    assert len(found) == 1, found
    if problem:
        assert problem in found[0]


def test_the_checker_accepts_good_links():
    text = "[a](docs/README.md) [b](docs/) [c](#factory) [d](docs/design.md#stack-notes) [e](https://duckdb.org)\n"
    assert problems({ROOT / "README.md": text}) == []


def test_links_in_code_are_not_links_and_anchors_follow_github():
    text = "Run `[x](../nowhere)`.\n```\n[y](../nowhere)\n```\n[ok](docs/design.md#the-line-one-daily-partition)\n"
    assert links(text) == ["docs/design.md#the-line-one-daily-partition"]
    assert slug("The model layer: real models, budgets, cache, batch") == "the-model-layer-real-models-budgets-cache-batch"
    assert slug("`make run` → what it prints") == "make-run--what-it-prints"


if __name__ == "__main__":
    listed = problems()
    print("\n".join(listed) or f"all links in {len(doc_files())} files resolve")
    sys.exit(1 if listed else 0)
