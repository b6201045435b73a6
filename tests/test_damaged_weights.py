"""Damaged weights files (truncated, bytes overwritten in the HDF5 metadata or
anywhere) either load or give a one-line UserError naming the file: never another
exception. Deterministic damage at seeded positions, bounded to a few seconds."""
import numpy as np
import pytest

from yolo3.errors import UserError
from yolo3.training import build_body
from yolo3.weights import load_weights, save_weights

VARIANTS = 36      # per format; about 0.05 s each for the tiny-YOLOv3 body


def damaged_copies(data, seed):
    """Truncations, 4 overwritten bytes in the first 8 KiB (superblock, object
    headers, attributes) and 4 overwritten bytes anywhere, in turn."""
    rng = np.random.default_rng(seed)
    for i in range(VARIANTS):
        damaged = bytearray(data)
        if i % 3 == 0:
            damaged = damaged[: int(rng.integers(1, len(damaged)))]
        else:
            end = min(len(damaged), 8192) if i % 3 == 1 else len(damaged)
            offset = int(rng.integers(0, end - 4))
            damaged[offset:offset + 4] = rng.integers(0, 256, 4, np.uint8).tobytes()
        yield i, bytes(damaged)


@pytest.mark.parametrize("writer", ["ours", "keras3"])
def test_damaged_weights_files_load_or_give_one_line_errors(tmp_path, writer):
    body = build_body(6, 2)
    source = tmp_path / "good.weights.h5"
    if writer == "ours":
        save_weights(body, source)
    else:
        body.save_weights(source)
    data = source.read_bytes()
    target = build_body(6, 2)
    outcomes = {"loaded": 0, "refused": 0}
    for i, damaged in damaged_copies(data, seed=len(writer)):
        path = tmp_path / f"damaged{i}.weights.h5"
        path.write_bytes(damaged)
        try:
            loaded, _ = load_weights(target, path)
        except UserError as error:
            message = str(error)
            assert str(path) in message and "\n" not in message, message
            outcomes["refused"] += 1
        else:
            assert loaded and i % 3, f"variant {i} (a truncation) loaded"
            outcomes["loaded"] += 1
        path.unlink()
    # A truncated file is always refused (HDF5 records the end of the file);
    # overwritten array bytes load (HDF5 keeps no checksums).
    assert outcomes["refused"] >= VARIANTS // 3 and outcomes["loaded"] > 0, outcomes
