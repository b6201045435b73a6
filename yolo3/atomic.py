"""Write files under a temporary name and rename them into place when complete,
so that an error or a kill never leaves a truncated output behind. (A kill can
leave a temporary, named `.NAME.tmp-XXXX`; yolo3.resume sweeps them.)"""
import contextlib
import os
import tempfile

TEMP_MARK = ".tmp-"


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to `path`; rename it to `path` on success."""
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{name}{TEMP_MARK}", dir=folder)
    os.close(fd)
    try:
        yield temp
        os.chmod(temp, 0o666 & ~_umask())
        os.replace(temp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.remove(temp)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = path
        raise


@contextlib.contextmanager
def atomic_open(path, mode="w", **kwargs):
    """Open a temporary file next to `path` for writing; rename it on success."""
    with atomic_path(path) as temp:
        with open(temp, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
