"""Arrays of one row per image on disk (the bottleneck cache): one .npy file per
array, written chunk by chunk and read back through memory maps, so memory
does not grow with the number of images.

A cache is a folder `<name>/` holding the .npy files and `manifest.json`. It is
built in a temporary folder (files written at their offsets, the manifest last)
and renamed into place when complete: a killed build leaves only a temporary
folder, never trusted and removed by the next build."""
import contextlib
import json
import mmap
import os
import shutil
import tempfile

import numpy as np

from .errors import UserError

MANIFEST = "manifest.json"
TEMP_MARK = ".building-"


def cache_bytes(count, specs):
    """Bytes of `count` rows of arrays {name: (row shape, dtype)} (headers aside)."""
    return sum(count * int(np.prod(shape)) * np.dtype(dtype).itemsize
               for shape, dtype in specs.values())


def check_disk(folder, needed):
    """UserError before any work when `folder`'s disk has less than `needed`
    bytes free (with 1% and 64 MiB to spare)."""
    existing = os.path.abspath(folder)
    while not os.path.isdir(existing):
        existing = os.path.dirname(existing)
    free = shutil.disk_usage(existing).free
    if needed + needed // 100 + (64 << 20) > free:
        raise UserError(f"{folder}: the bottleneck cache needs {needed} bytes "
                        f"({needed / 2**30:.1f} GiB), only {free} bytes are free there; "
                        "free some space or use a --log-dir on a larger disk")


def _open_rows(path, shape, dtype, count):
    """A new .npy file of `count` rows (written as zeros only where not filled)
    and the byte offset of its first row."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype,
                                      shape=(count, *shape))
    offset = array.offset
    del array
    return offset


def write_cache(folder, count, specs, chunks):
    """Build the cache `folder` from `chunks`: an iterable of {name: rows}
    covering rows 0..count-1 in order. Each chunk is written straight to its
    file (no memory map held while writing, so the written pages are the
    kernel's to drop). Returns the folder."""
    parent, name = os.path.split(os.path.abspath(folder))
    os.makedirs(parent, exist_ok=True)
    remove_unfinished(parent, name)
    temp = tempfile.mkdtemp(prefix=f"{name}{TEMP_MARK}", dir=parent)
    try:
        offsets = {key: _open_rows(os.path.join(temp, f"{key}.npy"), shape, dtype, count)
                   for key, (shape, dtype) in specs.items()}
        with contextlib.ExitStack() as stack:
            handles = {key: stack.enter_context(open(os.path.join(temp, f"{key}.npy"),
                                                     "r+b"))
                       for key in specs}
            done = 0
            for chunk in chunks:
                rows = len(next(iter(chunk.values())))
                for key, values in chunk.items():
                    values = np.ascontiguousarray(values, dtype=specs[key][1])
                    handles[key].seek(offsets[key] + done * values[0].nbytes)
                    handles[key].write(values.tobytes())
                done += rows
            if done != count:
                raise ValueError(f"the chunks gave {done} rows, {count} expected")
            for handle in handles.values():
                handle.flush()
                os.fsync(handle.fileno())
        manifest = {"count": count, "arrays": {k: [list(s), np.dtype(d).str]
                                               for k, (s, d) in specs.items()}}
        with open(os.path.join(temp, MANIFEST), "w", encoding="utf-8") as handle:
            json.dump(manifest, handle)
        if os.path.isdir(folder):
            shutil.rmtree(folder)
        os.replace(temp, folder)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return folder


def remove_unfinished(parent, name):
    """Delete the temporary folders of killed builds of `name` in `parent`."""
    if os.path.isdir(parent):
        for entry in os.listdir(parent):
            if entry.startswith(f"{name}{TEMP_MARK}"):
                shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)


class MappedRows:
    """One .npy file, memory-mapped read-only; `rows(indices)` copies rows out
    and releases the mapped pages again (the whole mapping: the kernel maps
    neighbouring pages on a fault too; releasing costs only what is mapped), so
    reading a whole epoch keeps only a batch resident; the file stays in the
    kernel's page cache."""

    def __init__(self, path):
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(handle)
            offset = handle.tell()
            self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        if fortran:
            raise ValueError(f"{path}: Fortran-ordered array")
        self.array = np.ndarray(shape, dtype, buffer=self._map, offset=offset)
        self.shape, self.dtype = shape, dtype

    def __len__(self):
        return self.shape[0]

    def rows(self, indices):
        out = self.array[np.asarray(indices)]
        self._map.madvise(mmap.MADV_DONTNEED)
        return out

    __getitem__ = rows


def read_cache(folder, count, specs):
    """{name: MappedRows} of a complete cache whose manifest matches `count` and
    `specs`; None when there is none (or it does not match)."""
    try:
        with open(os.path.join(folder, MANIFEST), encoding="utf-8") as handle:
            manifest = json.load(handle)
    except (OSError, ValueError):
        return None
    wanted = {k: [list(s), np.dtype(d).str] for k, (s, d) in specs.items()}
    if manifest.get("count") != count or manifest.get("arrays") != wanted:
        return None
    arrays = {key: MappedRows(os.path.join(folder, f"{key}.npy")) for key in specs}
    if any(len(a) != count for a in arrays.values()):
        return None
    return arrays


def cached_rows(folder, count, specs, chunks, label="cache"):
    """The cache in `folder`, read when complete and matching, else built from
    `chunks()` after checking the disk space; {name: MappedRows}."""
    arrays = read_cache(folder, count, specs)
    if arrays is not None:
        print(f"Bottleneck: reusing cached {label} features {folder}")
        return arrays
    needed = cache_bytes(count, specs)
    check_disk(os.path.dirname(os.path.abspath(folder)), needed)
    print(f"Bottleneck: computing {label} features of {count} images "
          f"({needed / 2**20:.0f} MiB on disk) ...")
    write_cache(folder, count, specs, chunks())
    return read_cache(folder, count, specs)
