"""The command line's conventions: pipes, help, -m, -v/-q, config show, completion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from taxipipe.cli import CLOSED_PIPE_STATUS
from tests.helpers import run_cli, store_uri

TAXIPIPE = [sys.executable, "-m", "taxipipe"]


def clean_env(**extra: str) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TAXIPIPE_")}
    environment.update(extra)
    return environment


@pytest.mark.parametrize("args", [["config", "show"], ["make", "--list"], ["compare"]])
def test_closed_pipe_ends_quietly_like_git(args: list[str], home: Path) -> None:
    """The reader is gone before the command writes (`| true`): no traceback, status 141."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        process = subprocess.run([*TAXIPIPE, *args, "--home", str(home)],
                                 stdout=write_end, stderr=subprocess.PIPE, text=True, env=clean_env(),
                                 timeout=120)
    finally:
        os.close(write_end)
    assert process.stderr == ""
    assert process.returncode == CLOSED_PIPE_STATUS == 141


def test_head_takes_the_first_line_and_the_rest_is_dropped_quietly(home: Path) -> None:
    shell = subprocess.run(
        ["bash", "-c", 'set -o pipefail; "$@" | head -1; echo "status ${PIPESTATUS[0]}"', "_",
         *TAXIPIPE, "config", "show", "--home", str(home)],
        capture_output=True, text=True, env=clean_env(), timeout=120)
    lines = shell.stdout.splitlines()
    assert lines[0].split() == ["KEY", "ORIGIN", "VALUE"]
    assert lines[1] in {"status 0", f"status {CLOSED_PIPE_STATUS}"}
    assert shell.stderr == ""


def test_no_arguments_prints_help_and_python_dash_m_is_the_command() -> None:
    bare = subprocess.run(TAXIPIPE, capture_output=True, text=True, env=clean_env(), timeout=60)
    assert bare.returncode == 0 and bare.stderr == ""
    assert bare.stdout.startswith("usage: taxipipe") and "completion" in bare.stdout
    version = subprocess.run([*TAXIPIPE, "--version"], capture_output=True, text=True, timeout=60)
    assert version.stdout.startswith("taxipipe ")


def test_help_loads_no_heavy_library() -> None:
    probe = ("import sys\nfrom taxipipe.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
             "print(sorted(m for m in ('pydantic', 'mlflow', 'pandas', 'xgboost', 'argcomplete') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_run_help_shows_the_defaults() -> None:
    result = run_cli("run", "--help")
    text = " ".join(result.stdout.split())
    assert "training year (default: 2023)" in text
    assert "feature encoding (default: categorical)" in text
    assert "(default: ~/.taxipipe)" in text
    make = " ".join(run_cli("make", "--help").stdout.split())
    assert "(default: 1)" in make


def test_config_show_names_the_store_it_will_use_and_prints_json(home: Path) -> None:
    shown = run_cli("config", "show", "--home", str(home), "--year", "2022")
    assert shown.returncode == 0, shown.stderr
    head, *lines = shown.stdout.splitlines()
    origin_at, value_at = head.index("ORIGIN"), head.index("VALUE")
    rows = {line.split()[0]: (line[origin_at:value_at].strip(), line[value_at:]) for line in lines}
    assert rows["mlflow.tracking_uri"] == ("default", store_uri(home))
    assert rows["data.year"] == ("flag", "2022")
    assert rows["model.preset"] == ("default", "")
    machine = json.loads(run_cli("config", "show", "--home", str(home), "--json").stdout)
    assert machine["data.year"] == {"value": 2023, "origin": "default"}
    assert machine["mlflow.tracking_uri"]["value"] == store_uri(home)
    assert not home.exists()


def test_quiet_and_verbose_flags_go_before_or_after_the_command(home: Path) -> None:
    loud = run_cli("make", "--clean", "--home", str(home))
    assert loud.returncode == 0 and "🧹 Nothing to remove" in loud.stdout
    for args in (["make", "--clean", "-q"], ["-q", "make", "--clean"], ["make", "--clean", "--quiet"]):
        quiet = run_cli(*args, "--home", str(home))
        assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == ""
    clash = run_cli("make", "--clean", "-q", "-v", "--home", str(home))
    assert clash.returncode == 2 and "not allowed with argument" in clash.stderr


def test_completion_offers_make_for_ma(tmp_path: Path) -> None:
    """As argcomplete's own tests drive it: the shell's variables, the answer in a file."""
    answer = tmp_path / "completions"
    line = "taxipipe ma"
    result = subprocess.run(TAXIPIPE, env=clean_env(COMP_LINE=line, COMP_POINT=str(len(line)), _ARGCOMPLETE="1",
                                                    _ARGCOMPLETE_STDOUT_FILENAME=str(answer)),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert answer.read_text().split() == ["make"]


def test_completion_script_completes_in_bash(tmp_path: Path) -> None:
    """`taxipipe completion bash` sourced into a real bash completes `taxipipe ma` and flags."""
    bin_dir = Path(sys.executable).parent
    assert (bin_dir / "taxipipe").exists()
    script = ('source <(taxipipe completion bash)\n'
              'complete_line() { COMP_LINE="$1"; COMP_POINT=${#1}; read -ra COMP_WORDS <<< "$1";'
              ' COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _python_argcomplete taxipipe; echo "${COMPREPLY[*]}"; }\n'
              'complete_line "taxipipe ma"\ncomplete_line "taxipipe run --fea"\n')
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120,
                            env=clean_env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}"))
    assert result.stdout.split("\n")[:2] == ["make ", "--features "], result.stderr

