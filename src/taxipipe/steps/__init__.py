"""The nine steps of the pipeline: plain functions, files in and files out.

Each step takes the run's `StepContext` and the small records its upstream steps returned
(keyed by step name; `pipeline.run_step` checks that every one the graph names is there),
writes its outputs atomically under the partition's directory, and returns a small,
JSON-serialisable record (paths, row counts, metrics, run ids), typed per step (`TrainRecord`
and the others, all extending `StepRecord`). No step hands a DataFrame to another, so every
runner (simple, make, Airflow, Prefect, Dagster) can carry the records.
"""

from taxipipe.steps.context import (ROLES, STEP_LIBRARIES, VOLATILE_FIELDS, Record, StepContext, StepRecord,
                                    Upstream, run_key_of)
from taxipipe.steps.data import (CleanRecord, ExtractRecord, FeaturesRecord, TransformRecord, ValidateDataRecord,
                                 extract, extract_month, features, transform, validate_data)
from taxipipe.steps.publish import (CleanupRecord, DeployRecord, SaveRecord, VerdictRecord, cleanup, deploy, save,
                                    validate_model)
from taxipipe.steps.train import TrainRecord, train

__all__ = ["ROLES", "STEP_LIBRARIES", "VOLATILE_FIELDS", "CleanRecord", "CleanupRecord", "DeployRecord",
           "ExtractRecord", "FeaturesRecord", "Record", "SaveRecord", "StepContext", "StepRecord", "TrainRecord",
           "TransformRecord", "Upstream", "ValidateDataRecord", "VerdictRecord", "cleanup",
           "deploy", "extract", "extract_month", "features", "run_key_of", "save", "train", "transform",
           "validate_data", "validate_model"]
