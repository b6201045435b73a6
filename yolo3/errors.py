"""User-facing errors: one line on stderr and exit status 2, no traceback."""
import errno
import sys


class UserError(Exception):
    """A mistake in the user's input (flag, file, line); the message says which."""


def read_text(path):
    """A small text file's content (UTF-8, a BOM dropped); a UserError naming the
    file and the byte when it is not UTF-8."""
    try:
        with open(path, encoding="utf-8-sig") as handle:
            return handle.read()
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not a UTF-8 text file ({exc.reason} at byte "
                        f"{exc.start})") from None


def describe_os_error(exc):
    """'path: reason' for an OSError, e.g. a missing file or a full disk."""
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        reason = "no space left on the device"
    return f"{exc.filename}: {reason}" if exc.filename else reason


def run_cli(main, argv=None):
    """Call main(argv); turn user mistakes into `error: ...` and exit status 2."""
    try:
        return main(argv) or 0
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
