"""The make-like runner (`runner.py`) and its memory of finished steps (`state.py`)."""
