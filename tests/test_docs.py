"""The examples in the README and the guides run, each as a script, and succeed.

Every fenced block whose info string is exactly ``python`` is written to a file in
a fresh temporary directory and run with this interpreter in its own process, so
one example cannot lean on what another imported or left behind.  A block fenced
as ``python-norun`` is shown to readers but not run (use that sparingly).

A documented behaviour that the library does not deliver yet stays documented as
it should be; the line right above its block says so::

    <!-- docs-test: xfail the reason, and where the bug is tracked -->

The test is then a strict expected failure: once the library is fixed it passes,
pytest reports XPASS as an error, and the marker must go.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs" / "guide").glob("*.md"))]
BLOCK_TIMEOUT = 20.0

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_XFAIL = re.compile(r"^\s*<!--\s*docs-test:\s*xfail\s+(?P<reason>.+?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    """One runnable example: where it starts, its source, and whether it is known broken."""

    path: Path
    line: int  # 1-based line of the opening fence
    source: str
    xfail: str | None

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT).as_posix()}:{self.line}"


def _language(info: str) -> str:
    words = info.split()
    return words[0] if words else ""


def extract_blocks(path: Path) -> list[Block]:
    """Every ```python block of a Markdown file (other fences are skipped whole)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        body: list[str] = []
        end = index + 1
        # A fence closes with the same character, at least as long, and nothing after it.
        while end < len(lines):
            stripped = lines[end].strip()
            if stripped.startswith(fence) and set(stripped) == {fence[0]}:
                break
            body.append(lines[end].removeprefix(indent))
            end += 1
        if _language(opening["info"]) == "python":
            source = "\n".join(body) + "\n"
            blocks.append(Block(path, index + 1, source, _xfail_reason(lines, index)))
        index = end + 1
    return blocks


def _xfail_reason(lines: list[str], fence_index: int) -> str | None:
    above = fence_index - 1
    while above >= 0 and not lines[above].strip():
        above -= 1
    marker = _XFAIL.match(lines[above]) if above >= 0 else None
    return marker["reason"] if marker else None


def _params() -> list[object]:
    params: list[object] = []
    for path in DOCUMENTS:
        for block in extract_blocks(path):
            marks = [pytest.mark.xfail(reason=block.xfail, strict=True)] if block.xfail else []
            params.append(pytest.param(block, id=block.id, marks=marks))
    return params


@pytest.mark.parametrize("block", _params())
def test_example_runs(block: Block, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(block.source, encoding="utf-8")
    try:
        result = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{block.id}: still running after {BLOCK_TIMEOUT:g} s\n{_output(exc)}")
    assert result.returncode == 0, f"{block.id} exited with {result.returncode}\n{_output(result)}"


def _output(result: subprocess.CompletedProcess[str] | subprocess.TimeoutExpired) -> str:
    def text(value: str | bytes | None) -> str:
        return value.decode(errors="replace") if isinstance(value, bytes) else value or ""

    return f"--- stdout\n{text(result.stdout)}--- stderr\n{text(result.stderr)}"


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_document_has_an_example(path: Path) -> None:
    assert extract_blocks(path), f"{path.name} has no ```python example"


def test_extraction_skips_other_fences(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "text\n"
        "```bash\nmake test\n```\n"
        "````markdown\n```python\nnot an example\n```\n````\n"
        "```python-norun\nraise SystemExit(1)\n```\n"
        "<!-- docs-test: xfail a known bug -->\n"
        "```python\nprint('hi')\n```\n"
        "  ```python\n  x = 1\n  ```\n",
        encoding="utf-8",
    )
    blocks = extract_blocks(doc)
    assert [(b.line, b.source, b.xfail) for b in blocks] == [
        (14, "print('hi')\n", "a known bug"),
        (17, "x = 1\n", None),
    ]
