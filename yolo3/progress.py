"""The one progress bar of the tools (tqdm on stderr): shown on a terminal when
the work lasts more than DELAY seconds, quiet otherwise (a log file, a pipe,
the tests, short work)."""
import contextlib
import sys

from tqdm import tqdm

DELAY = 1.0     # seconds before a bar appears: short work shows none


def on_terminal():
    """Whether bars are shown when the caller does not say: stderr is a terminal."""
    return sys.stderr.isatty()


@contextlib.contextmanager
def progress_bar(total, label, enabled=None, unit="it"):
    """Yields advance(n=1), to be called as steps of `total` are done. The bar
    (`label: 40%|####      | 30/75 [...]`) is drawn when `enabled` (None: when
    on_terminal()) and removed at the end; otherwise advance does nothing."""
    if enabled is None:
        enabled = on_terminal()
    if not enabled:
        yield lambda n=1: None
        return
    with tqdm(total=total, desc=label, unit=unit, delay=DELAY, leave=False,
              file=sys.stderr, dynamic_ncols=True) as bar:
        yield bar.update
