"""Every ```sh and ```python block of README.md and docs/*.md runs, so no snippet can rot.

A block that cannot run in a test (a long-lived server, the internet, minutes of work) is
directly preceded by a line `<!-- not-tested: reason -->`; a document with no block to run
says why in a line `<!-- no-runnable-blocks: reason -->`. The blocks of one document run in
order, as a reader would run them, from a copy of the checkout (links) beside a
`../shared/data/tlc` of the real months, with HOME and TAXIPIPE_HOME in a temporary
directory, `.venv/bin` first on the PATH and the data URL template pointed at the test's
TLC server.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import REPO, TlcServer

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
RUNNABLE = {"sh": ["bash", "-eo", "pipefail", "-c"], "python": [sys.executable, "-c"]}
FENCE = re.compile(r"^```(\S*)\s*$")
NOT_TESTED = re.compile(r"^<!-- not-tested: (.*\S.*) -->$")
#: A document without a block to run says why, on a line of its own.
NO_BLOCKS = re.compile(r"^<!-- no-runnable-blocks: (.*\S.*) -->$", re.M)


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    language: str
    code: str
    not_tested: str | None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, with the reason a block is not run, if any."""
    found: list[Block] = []
    lines = path.read_text().splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
        marker = NOT_TESTED.match(lines[index - 1]) if index else None
        found.append(Block(path, index + 1, opening.group(1), "\n".join(lines[index + 1:end]) + "\n",
                           marker.group(1) if marker else None))
        index = end + 1
    return found


def test_markers_name_a_reason_and_stand_right_above_a_runnable_block() -> None:
    for path in DOCS:
        lines = path.read_text().splitlines()
        starts = {block.line - 1: block for block in blocks(path)}
        for number, line in enumerate(lines):
            if line.startswith("<!-- not-tested"):
                assert NOT_TESTED.match(line), f"{path.name}:{number + 1}: a not-tested marker needs a reason"
                block = starts.get(number + 1)
                assert block is not None and block.language in RUNNABLE, (
                    f"{path.name}:{number + 1}: the marker must stand directly above a sh or python block")


def runnable_blocks(path: Path) -> list[Block]:
    return [block for block in blocks(path) if block.language in RUNNABLE and block.not_tested is None]


def test_every_document_runs_a_block_or_says_why_not() -> None:
    for path in DOCS:
        has_blocks, says_why = bool(runnable_blocks(path)), bool(NO_BLOCKS.search(path.read_text()))
        assert has_blocks != says_why, (
            f"{path.name}: {'drop the no-runnable-blocks line' if has_blocks else 'add a block that runs, or say why not'}")


def checkout_copy(root: Path, tlc_dir: Path) -> Path:
    """ROOT/checkouts/taxipipe linking every top-level entry of the checkout, beside ROOT/checkouts/shared/data/tlc."""
    checkout = root / "checkouts" / "taxipipe"
    checkout.mkdir(parents=True)
    for entry in REPO.iterdir():
        if entry.name not in {".git", ".pytest_cache"}:
            (checkout / entry.name).symlink_to(entry)
    (root / "checkouts" / "shared" / "data").mkdir(parents=True)
    (root / "checkouts" / "shared" / "data" / "tlc").symlink_to(tlc_dir.resolve())
    return checkout


@pytest.mark.slow
@pytest.mark.parametrize("doc", [path for path in DOCS if runnable_blocks(path)], ids=lambda path: path.name)
def test_every_block_runs(doc: Path, tmp_path: Path, tlc_server: TlcServer, tlc_dir: Path) -> None:
    runnable = runnable_blocks(doc)
    checkout = checkout_copy(tmp_path, tlc_dir)
    user_home = tmp_path / "user"
    user_home.mkdir()
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith("TAXIPIPE_") and key not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "ARGS", "V"}}
    environment.update(HOME=str(user_home), TAXIPIPE_HOME=str(user_home / ".taxipipe"),
                       TAXIPIPE_DATA__URL_TEMPLATE=tlc_server.url_template,
                       TAXIPIPE_DATA__DOWNLOAD_BACKOFF_SECONDS="0.01",
                       PATH=f"{checkout / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}")
    for block in runnable:
        result = subprocess.run([*RUNNABLE[block.language], block.code], cwd=checkout, env=environment,
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=1200)
        assert result.returncode == 0, (
            f"{block.where} ({block.language}) failed with status {result.returncode}:\n{block.code}\n"
            f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}")


def test_blocks_that_do_not_run_still_parse() -> None:
    """A `not-tested` block is at least valid shell or Python, so a reader can paste it."""
    for path in DOCS:
        for block in blocks(path):
            if block.not_tested is None:
                continue
            if block.language == "python":
                compile(block.code, block.where, "exec")
            else:
                result = subprocess.run(["bash", "-n", "-c", block.code], capture_output=True, text=True, timeout=60)
                assert result.returncode == 0, f"{block.where} does not parse:\n{block.code}\n{result.stderr}"


def curl_requests(code: str) -> set[str]:
    """The curl commands of a shell block that ask `taxipipe serve` (port 9696), one line each."""
    joined = code.replace("\\\n", " ")
    return {" ".join(line.split()) for line in joined.splitlines()
            if line.lstrip().startswith("curl ") and "127.0.0.1:9696" in line}


def test_requests_to_paste_are_the_ones_a_tested_block_sends() -> None:
    """README's and first-hour's requests to a running server are sent by docs/serving.md's block."""
    sent = {request for path in DOCS for block in runnable_blocks(path) for request in curl_requests(block.code)}
    pasted = {(block.where, request) for path in DOCS for block in blocks(path)
              if block.not_tested is not None for request in curl_requests(block.code)}
    assert {where.split(":")[0] for where, _ in pasted} >= {"README.md", "docs/first-hour.md"}
    assert [(where, request) for where, request in pasted if request not in sent] == []
