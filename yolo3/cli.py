"""What the command-line tools share: one parser class (the same `--help` style,
every default shown, a bad flag as one line `error: ...` with exit status 2), the
one input-size grammar, and TensorFlow's start-up log lines kept off the screen."""
import argparse
import contextlib
import os
import sys
import tempfile

from .errors import UserError

SIZE_HELP = "N (square) or WIDTHxHEIGHT, multiples of 32, e.g. 416 or 608x416"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written; each option's default after its help text
    ('off'/'on' for a switch), unless the help already states it, the option is
    required, or the default is None (the help says what happens then)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("default" in text or default is argparse.SUPPRESS or default is None
                or action.required or not action.option_strings
                or isinstance(action, argparse._HelpAction)):
            return text
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            return f"{text} (default: {'on' if default else 'off'})"
        if action.type is input_size and isinstance(default, tuple):
            default = format_size(default)
        return f"{text} (default: {default})"


class Parser(argparse.ArgumentParser):
    """argparse.ArgumentParser with the tools' conventions; sub-parsers share them
    (add_subparsers makes parsers of this class). The argparse types here raise
    their reason only; the parser names the flag and the value."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        """A bad flag: one line `error: ...` and exit status 2 (via run_cli)."""
        raise UserError(message)

    def _get_value(self, action, arg_string):
        """A value its type rejects reads `FLAG VALUE: reason`."""
        try:
            return super()._get_value(action, arg_string)
        except argparse.ArgumentError as exc:
            flag = action.option_strings[-1] if action.option_strings else action.dest
            raise UserError(f"{flag} {arg_string}: {exc.message}") from None


def input_size(text):
    """argparse type for every --input-size: 'N' -> (N, N); 'WIDTHxHEIGHT' ->
    (HEIGHT, WIDTH), the library's (h, w) order. Each side a positive multiple of
    32 (the network downsamples 5 times by 2)."""
    parts = str(text).strip().lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2):
        raise argparse.ArgumentTypeError(f"expected {SIZE_HELP}")
    if any(v <= 0 or v % 32 for v in values):
        raise argparse.ArgumentTypeError(
            "must be a positive multiple of 32 (the network downsamples 5 times by 2)")
    width, height = values * 2 if len(values) == 1 else values
    return height, width


def side_range(text):
    """argparse type for --multi-scale: 'LOW-HIGH' (multiples of 32) -> (LOW, HIGH);
    'off' -> ()."""
    if str(text).strip().lower() in ("off", "none", "0"):
        return ()
    try:
        low, high = (int(v) for v in str(text).split("-"))
    except ValueError:
        raise argparse.ArgumentTypeError("expected LOW-HIGH, e.g. 320-608, or off") from None
    if low > high or low < 32 or low % 32 or high % 32:
        raise argparse.ArgumentTypeError("LOW <= HIGH, both multiples of 32, at least 32")
    return low, high


def add_input_size(parser, default=416, what="network input"):
    """The --input-size flag in the one grammar; args.input_size is (h, w)."""
    parser.add_argument("--input-size", type=input_size, default=str(default),
                        metavar="SIZE", help=f"{what}: {SIZE_HELP}")


def format_size(shape):
    """(h, w) -> '416' when square, else 'WIDTHxHEIGHT'."""
    height, width = shape
    return str(width) if width == height else f"{width}x{height}"


def non_negative_int(text):
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def positive_int(text):
    """argparse type: an integer >= 1."""
    value = non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def quiet_tensorflow():
    """Load TensorFlow (through Keras) with its start-up log lines (oneDNN, CUDA,
    cpu_feature_guard, absl) kept off the screen. Call it before anything imports
    TensorFlow. A TF_CPP_MIN_LOG_LEVEL set by the user is left alone, and then
    so is everything TensorFlow prints."""
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        return
    # 3: only fatal C++ messages after start-up (e.g. not the failed cuInit of a
    # machine without a GPU); Python exceptions are not affected.
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if "keras" not in sys.modules:
        # absl writes the first lines before it reads any setting
        with _stderr_held():
            import keras  # noqa: F401
    with contextlib.suppress(ImportError):
        from absl import logging as absl_logging
        absl_logging.set_verbosity(absl_logging.ERROR)


@contextlib.contextmanager
def _stderr_held():
    """Within: what goes to file descriptor 2 is held in a temporary file, and
    written out afterwards only if the block raised."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                held.seek(0)
                sys.stderr.write(held.read().decode(errors="replace"))
