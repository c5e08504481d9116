#!/usr/bin/env bash
# The orchestration examples behind one menu.
#
#   examples/run_examples.sh            interactive menu
#   examples/run_examples.sh 6          run one item and exit with its status (6: all, also --all)
#   examples/run_examples.sh --help     the items
#
# Settings come from TAXIPIPE_* variables or a TAXIPIPE_CONFIG file, e.g.
#   TAXIPIPE_DATA__URL_TEMPLATE='../shared/data/tlc/{color}_tripdata_{year}-{month:02d}.parquet'
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$ROOT/.venv/bin/python"
TAXIPIPE="$ROOT/.venv/bin/taxipipe"

require_env() {
    if [ ! -x "$PY" ] || [ ! -x "$TAXIPIPE" ]; then
        echo "❌ No environment in $ROOT/.venv. Create it with: make -C \"$ROOT\" env"
        exit 1
    fi
}

months() {
    "$PY" -c 'from taxipipe.config import load_settings as l; s = l(); print(f"--year {s.data.year} --month {s.data.month}")'
}

# run LABEL COMMAND...: run a command, then report ✅ or ❌ with the step that failed.
# On a terminal only stdout goes through the log, so progress (on stderr) still draws there.
run() {
    local label="$1"; shift
    local log; log="$(mktemp)"
    echo "▶️  $label"
    if [ -t 2 ]; then
        "$@" | tee "$log"
    else
        "$@" 2>&1 | tee "$log"
    fi
    local status=${PIPESTATUS[0]}
    if [ "$status" -eq 0 ]; then
        echo "✅ $label succeeded"
    else
        local step
        step="$(grep -o "Task '[][a-z_0-9-]*' failed" "$log" | tail -1 | cut -d"'" -f2)"
        echo "❌ $label failed${step:+ at step '$step'} (exit $status)"
    fi
    rm -f "$log"
    return "$status"
}

simple()  { run "Simple runner" "$PY" "$ROOT/examples/simple_pipeline.py"; }
airflow() { run "Airflow runner" "$PY" "$ROOT/examples/airflow_pipeline.py" $(months); }
prefect() { run "Prefect runner" "$PY" "$ROOT/examples/prefect_pipeline.py" $(months); }
makelike() { run "Make-like runner" "$PY" "$ROOT/examples/make_pipeline.py" deploy; }
dagster() { run "Dagster runner" "$PY" "$ROOT/examples/dagster_pipeline.py" $(months); }

run_all() {
    local failed=0
    simple || failed=1
    airflow || failed=1
    prefect || failed=1
    makelike || failed=1
    dagster || failed=1
    run "Comparison of the runners" "$TAXIPIPE" compare --check || failed=1
    echo "📖 Each concept in each engine, what each costs and when to pick which: $ROOT/docs/engines.md"
    return "$failed"
}

install_optional() { run "Install optional dependencies (Airflow, Prefect, Dagster)" make -C "$ROOT" env; }

clean() {
    local home
    home="$("$PY" -c 'from taxipipe.config import load_settings; print(load_settings().home)')"
    run "Clean caches and temporary files" bash -c '
        "$1" make --clean &&
        rm -rf "$2/partitions" "$2/prefect/results" "$2/dagster/storage" &&
        find "$3" -name __pycache__ -type d -prune -not -path "*/.venv/*" -exec rm -rf {} + &&
        rm -rf "$3/.pytest_cache" &&
        echo "removed intermediates under $2 and Python caches under $3"' _ "$TAXIPIPE" "$home" "$ROOT"
}

show_config() { run "Configuration" "$TAXIPIPE" config show; }
check_components() { run "Component check" "$PY" "$ROOT/examples/check_components.py"; }

ITEMS='  1) Simple runner
  2) Airflow runner
  3) Prefect runner
  4) Make-like runner
  5) Dagster runner
  6) Run all in sequence (then compare)
  7) Install optional dependencies
  8) Clean caches and temporary files
  9) Show the configuration
 10) Test individual components
  0) Exit'

menu() {
    printf '\n🚕 taxipipe: one pipeline, many orchestrators\n%s\n' "$ITEMS"
}

usage() {
    printf 'Usage: examples/run_examples.sh [ITEM | --all | --help]\n\n'
    printf 'Without ITEM: an interactive menu. With ITEM: run it and exit with its status.\n'
    printf 'Settings come from TAXIPIPE_* variables or a TAXIPIPE_CONFIG file.\n\n%s\n' "$ITEMS"
}

dispatch() {
    case "$1" in
        1) simple ;;
        2) airflow ;;
        3) prefect ;;
        4) makelike ;;
        5) dagster ;;
        6|--all) run_all ;;
        7) install_optional ;;
        8) clean ;;
        9) show_config ;;
        10) check_components ;;
        -h|--help) usage ;;
        *) echo "❓ Unknown choice '$1': pick 0-10 (--help lists them)"; return 2 ;;
    esac
}

case "${1:-}" in -h|--help) usage; exit 0 ;; esac
require_env
if [ $# -gt 0 ]; then
    dispatch "$1"
    exit $?
fi
while true; do
    menu
    printf "Choose [0-10]: "
    read -r choice || exit 0
    [ "$choice" = "0" ] && { echo "👋 Bye"; exit 0; }
    dispatch "$choice"
done
