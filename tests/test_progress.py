"""yolo3.progress: a bar on a terminal for work longer than DELAY seconds,
nothing otherwise."""
import time

from yolo3 import progress
from yolo3.progress import progress_bar


def run(total, **kwargs):
    with progress_bar(total, "work", **kwargs) as advance:
        for _ in range(total):
            advance()


def test_quiet_off_a_terminal(capsys):
    run(5)                                    # pytest's stderr is no terminal
    run(5, enabled=False)
    assert capsys.readouterr().err == ""


def test_bar_on_a_terminal(capsys, monkeypatch):
    monkeypatch.setattr(progress, "on_terminal", lambda: True)
    monkeypatch.setattr(progress, "DELAY", 0)
    with progress_bar(4, "work", unit="image") as advance:
        advance(3)
        time.sleep(0.15)                      # past tqdm's 0.1 s redraw interval
        advance()
    err = capsys.readouterr().err
    assert "work:" in err and "4/4 [" in err and "image/s" in err


def test_short_work_shows_nothing(capsys, monkeypatch):
    monkeypatch.setattr(progress, "on_terminal", lambda: True)
    run(5)                                    # well under DELAY (1 s)
    assert capsys.readouterr().err == ""


def test_forced_bar_without_a_total(capsys, monkeypatch):
    monkeypatch.setattr(progress, "DELAY", 0)
    with progress_bar(None, "frames", enabled=True) as advance:
        advance(2)
    assert "frames:" in capsys.readouterr().err
