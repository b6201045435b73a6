"""What the command-line tools share: one parser class (the same `--help` style,
every default shown, a bad flag as one line `error: ...` with exit status 2) and
the one input-size grammar."""
import argparse

from .errors import UserError

SIZE_HELP = "N (square) or WIDTHxHEIGHT, multiples of 32, e.g. 416 or 608x416"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written; each option's default after its help text
    ('off' for a switch), unless the help already states it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default is argparse.SUPPRESS or (
                not action.option_strings):
            return text
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            return f"{text} (default: {'on' if action.default else 'off'})"
        if isinstance(action, argparse._HelpAction):
            return text
        default = action.default
        if isinstance(default, tuple) and len(default) == 2 and action.type is input_size:
            default = format_size(default)
        return f"{text} (default: {default})"


class Parser(argparse.ArgumentParser):
    """argparse.ArgumentParser with the tools' conventions; sub-parsers share them."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        """A bad flag: one line `error: ...` and exit status 2 (via run_cli)."""
        raise UserError(message)


def input_size(text):
    """argparse type for every --input-size: 'N' -> (N, N); 'WIDTHxHEIGHT' ->
    (HEIGHT, WIDTH), the library's (h, w) order. Each side a positive multiple of
    32 (the network downsamples 5 times by 2)."""
    parts = str(text).lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2):
        raise argparse.ArgumentTypeError(f"{text!r}: expected {SIZE_HELP}")
    if any(v <= 0 or v % 32 for v in values):
        raise argparse.ArgumentTypeError(
            f"{text}: must be a positive multiple of 32 (the network downsamples 5 "
            "times by 2)")
    width, height = values * 2 if len(values) == 1 else values
    return height, width


def format_size(shape):
    """(h, w) -> '416' when square, else 'WIDTHxHEIGHT'."""
    height, width = shape
    return str(width) if width == height else f"{width}x{height}"


def non_negative_int(text):
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer ({text!r})") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative ({value})")
    return value
