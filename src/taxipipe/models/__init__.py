"""Model kinds (`model.kind`): one module per kind, named after it, defining `KIND`.

Adding a kind is one module here plus its name in `KIND_NAMES` (the first is the default).
`registry` looks kinds up; `base` says what a kind provides. Nothing heavy is imported here,
so the command line can offer the names instantly.
"""

KIND_NAMES = ("xgboost", "linear", "random_forest")
