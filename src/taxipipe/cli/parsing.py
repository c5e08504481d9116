"""What every command's parser shares: the help formatter, the output flags and its handler."""

from __future__ import annotations

import argparse
from typing import Any, Callable

from taxipipe.flags import FLAG_KEYS, add_output_flags

Handler = Callable[[argparse.Namespace], int]


class HelpFormatter(argparse.HelpFormatter):
    """Help that shows each option's default; a settings flag shows the setting's built-in default.

    The settings module loads only when help is printed, so parsing stays cheap.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default is argparse.SUPPRESS:
            return text
        default = action.default
        if action.dest in FLAG_KEYS:
            from taxipipe.config import default_value

            default = default_value(".".join(FLAG_KEYS[action.dest]))
        if default is None or not action.option_strings or action.nargs == 0:
            return text
        return f"{text} (default: {str(default).replace('%', '%%')})"


def command(commands: Any, name: str, handler: Handler, help: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A subcommand with the shared output flags, the help formatter and its handler."""
    parser = commands.add_parser(name, help=help, formatter_class=HelpFormatter, **kwargs)
    add_output_flags(parser, argparse.SUPPRESS)
    parser.set_defaults(handler=handler)
    return parser
