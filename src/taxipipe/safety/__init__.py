"""Crash safety: what taxipipe guarantees when a run is killed, interrupted or fails, and where.

- `atomic`: a file appears whole under its name or not at all; a killed writer's temporary
  file is never read and is deleted by the next run.
- `home_lock`: one run per home; cleanup never deletes what a running run uses.
- `interrupts`: Ctrl-C and SIGTERM stop a run between steps and download chunks, never inside
  a native library, with one line and exit 130 / 143.
- The make runner records a step only after it succeeded (`runners.make.state`); an MLflow run
  left RUNNING by a killed process is marked FAILED by the next run of its partition
  (`tracking.fail_abandoned_runs`); a deploy that failed moved no alias, and its retry reuses
  the registered version (`steps.deploy`, docs/champion.md).
"""
