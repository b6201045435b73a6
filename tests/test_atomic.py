"""yolo3.atomic: outputs appear complete or not at all, and nothing is left behind."""
import errno
import os

import pytest

from yolo3.atomic import TEMP_MARK, atomic_open, atomic_path


def names(folder):
    return sorted(os.listdir(folder))


def test_atomic_open_writes_the_file_and_leaves_no_temporary(tmp_path):
    with atomic_open(tmp_path / "out.txt", "w", encoding="utf-8") as handle:
        handle.write("done\n")
    assert (tmp_path / "out.txt").read_text(encoding="utf-8") == "done\n"
    assert names(tmp_path) == ["out.txt"]


def test_the_temporary_is_hidden_next_to_the_target_and_the_old_file_stays_until_the_end(
        tmp_path):
    target = tmp_path / "model.h5"
    target.write_bytes(b"old")
    with atomic_path(target) as temp:
        folder, name = os.path.split(temp)
        assert folder == str(tmp_path)      # same file system: os.replace is atomic
        assert name.startswith(".model.h5" + TEMP_MARK)
        with open(temp, "wb") as handle:
            handle.write(b"new")
        assert target.read_bytes() == b"old"  # readers see the old file meanwhile
    assert target.read_bytes() == b"new"
    assert names(tmp_path) == ["model.h5"]


@pytest.mark.parametrize("error", [ValueError("bad value"), KeyboardInterrupt()])
def test_an_error_while_writing_leaves_the_old_file_and_no_temporary(tmp_path, error):
    target = tmp_path / "log.csv"
    target.write_text("epoch\n1\n")
    with pytest.raises(type(error)):
        with atomic_open(target, "w") as handle:
            handle.write("epoch\n")
            raise error
    assert target.read_text() == "epoch\n1\n"
    assert names(tmp_path) == ["log.csv"]


def test_an_error_before_the_first_write_creates_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "never.txt"):
            raise RuntimeError("stop")
    assert names(tmp_path) == []


def test_an_os_error_without_a_file_name_is_given_the_target(tmp_path):
    target = tmp_path / "full.bin"
    with pytest.raises(OSError) as caught:
        with atomic_path(target):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert caught.value.filename == str(target)
    assert names(tmp_path) == []


def test_missing_folders_are_created(tmp_path):
    with atomic_open(tmp_path / "a" / "b" / "out.txt") as handle:
        handle.write("x")
    assert (tmp_path / "a" / "b" / "out.txt").read_text() == "x"


def test_the_file_gets_the_usual_permissions_not_the_temporary_files(tmp_path):
    """mkstemp makes 0600 files; the output must be 0666 less the umask, like open()."""
    old = os.umask(0o027)
    try:
        with atomic_open(tmp_path / "out.txt") as handle:
            handle.write("x")
    finally:
        os.umask(old)
    assert (tmp_path / "out.txt").stat().st_mode & 0o777 == 0o640
