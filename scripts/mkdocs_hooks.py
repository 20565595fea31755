"""MkDocs hooks (mkdocs.yml): links from docs/ into the rest of the repository.

The pages link to files beside docs/ as GitHub renders them (`../tests/test_tasks.py`,
`../bench/peers.md`). MkDocs knows only docs/ and would call each such link broken,
so the build copies every repository file a page links to into the site, under
`repo/`, and points the link there. A link to a file that does not exist is left
alone: MkDocs reports it, and `--strict` fails the build.
"""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

REPO = Path(__file__).resolve().parent.parent
MIRROR = "repo"
# [text](target) and ![alt](target): a relative target, up to its #anchor or title.
LINK = re.compile(r"(\]\()([^)\s#]+)([^)\s]*)")


def _real(src_uri: str, docs: Path) -> Path:
    """The file a site source stands for: a docs page, or a mirrored repository file."""
    if src_uri.startswith(MIRROR + "/"):
        return REPO / src_uri[len(MIRROR) + 1:]
    return docs / src_uri


def _site_uri(target: Path, docs: Path) -> str | None:
    """Where `target` is in the site's sources; None when it is outside the repository
    or inside docs/ (MkDocs checks those links itself)."""
    if target.is_relative_to(docs) or not target.is_relative_to(REPO):
        return None
    return f"{MIRROR}/{target.relative_to(REPO).as_posix()}"


def _targets(text: str, src_uri: str, docs: Path) -> list[tuple[str, Path]]:
    here = _real(src_uri, docs).parent
    found = []
    for match in LINK.finditer(text):
        url = match.group(2)
        if "://" in url or url.startswith(("/", "mailto:")):
            continue
        found.append((url, Path(os.path.normpath(here / url))))
    return found


def on_files(files: Files, config: Any) -> Files:
    """Mirror each existing repository file that a page (or a mirrored page) links to."""
    docs = Path(config["docs_dir"]).resolve()
    pending = [f for f in files if f.src_uri.endswith(".md")]
    while pending:
        page = pending.pop()
        text = Path(page.abs_src_path).read_text(encoding="utf-8")
        for _, target in _targets(text, page.src_uri, docs):
            uri = _site_uri(target, docs)
            if uri is None or not target.is_file() or files.get_file_from_path(uri):
                continue
            mirrored = File.generated(config, uri, abs_src_path=str(target))
            files.append(mirrored)
            if uri.endswith(".md"):
                pending.append(mirrored)
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    """Point each link into the repository at its mirrored copy."""
    docs = Path(config["docs_dir"]).resolve()
    here = posixpath.dirname(page.file.src_uri)
    real_here = _real(page.file.src_uri, docs).parent

    def rewrite(match: re.Match[str]) -> str:
        url = match.group(2)
        if "://" in url or url.startswith(("/", "mailto:")):
            return match.group(0)
        target = Path(os.path.normpath(real_here / url))
        if target.is_relative_to(docs):
            uri = target.relative_to(docs).as_posix()
        else:
            uri = _site_uri(target, docs)
            if uri is None or files.get_file_from_path(uri) is None:
                return match.group(0)  # no such file: MkDocs says the link is broken
        return f"{match.group(1)}{posixpath.relpath(uri, here or '.')}{match.group(3)}"

    return LINK.sub(rewrite, markdown)
