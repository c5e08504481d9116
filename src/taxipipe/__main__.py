"""`python -m taxipipe`: the same as the `taxipipe` command."""

from taxipipe.cli import entry

if __name__ == "__main__":
    entry()
