"""yolo3.cli: the one input-size grammar, the parser's one-line errors and exit
status 2, the help text's defaults, every CLI on it, and TensorFlow's start-up
lines kept off the screen."""
import argparse
import os
import re
import subprocess
import sys

import pytest

import annotations
import convert
import evaluate
import kmeans
import yolo
from tests.fixtures.darknet import SMALL_CFG, random_weights
from yolo3.cli import (SIZE_HELP, Parser, add_input_size, format_size, input_size,
                       non_negative_int, positive_int)
from yolo3.errors import UserError, run_cli
from tests.fixtures import ROOT

CLIS = {"yolo": yolo, "evaluate": evaluate, "kmeans": kmeans, "convert": convert,
        "annotations": annotations}


@pytest.mark.parametrize("text, shape", [
    ("416", (416, 416)), ("608x416", (416, 608)), ("608X416", (416, 608)),
    ("32x1024", (1024, 32)), (" 320 ", (320, 320)),
])
def test_input_size_grammar_is_n_or_width_x_height(text, shape):
    assert input_size(text) == shape          # (h, w), the library's order


@pytest.mark.parametrize("text, message", [
    ("100", "multiple of 32"), ("0", "multiple of 32"), ("-32", "multiple of 32"),
    ("608x400", "multiple of 32"), ("320,416", "expected N (square) or WIDTHxHEIGHT"),
    ("416x", "expected"), ("x", "expected"), ("32x32x32", "expected"), ("big", "expected"),
])
def test_input_size_errors(text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=re.escape(message)):
        input_size(text)


@pytest.mark.parametrize("shape, text", [((416, 416), "416"), ((416, 608), "608x416"),
                                         ((640, 320), "320x640")])
def test_format_size_writes_the_grammar(shape, text):
    assert format_size(shape) == text


def test_integer_types():
    assert non_negative_int("0") == 0 and positive_int("3") == 3
    for function, text in ((non_negative_int, "-1"), (positive_int, "0"),
                           (positive_int, "1.5")):
        with pytest.raises(argparse.ArgumentTypeError):
            function(text)


def demo_parser():
    parser = Parser(description="Demo.\n\n    kept   as written")
    parser.add_argument("--switch", action="store_true", help="a switch")
    parser.add_argument("--no-thing", action="store_false", dest="thing",
                        help="turn the thing off")
    parser.add_argument("--count", type=positive_int, default=3, help="a count")
    parser.add_argument("--path", default=None, help="a path (absent: none)")
    parser.add_argument("--must", required=True, help="required")
    parser.add_argument("--told", default=5, help="stated (default: five)")
    add_input_size(parser, 416, what="input")
    parser.add_argument("--wide", type=input_size, default=(416, 608), help="wide")
    return parser


def test_help_shows_each_default_once():
    raw = demo_parser().format_help()
    assert "Demo.\n\n    kept   as written\n" in raw
    text = " ".join(raw.split())
    assert "a switch (default: off)" in text and "turn the thing off (default: on)" in text
    assert "a count (default: 3)" in text
    assert "a path (absent: none)" in text and "(default: None)" not in text
    assert "--must MUST required" in text and "required (default" not in text
    assert "stated (default: five)" in text and "(default: 5)" not in text
    assert f"input: {SIZE_HELP} (default: 416)" in text
    assert "wide (default: 608x416)" in text


def test_bad_flags_are_one_line_errors_with_exit_status_2(capsys):
    parser = demo_parser()
    with pytest.raises(UserError, match="^--count 0: must be at least 1$"):
        parser.parse_args(["--must", "x", "--count", "0"])
    with pytest.raises(UserError) as info:
        parser.parse_args(["--must", "x", "--input-size", "100"])
    assert str(info.value) == ("--input-size 100: must be a positive multiple of 32 (the "
                               "network downsamples 5 times by 2)")

    def main(argv):
        parser.parse_args(argv)

    for argv in (["--must", "x", "--bogus"], [], ["--must", "x", "--input-size", "100"]):
        assert run_cli(main, argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err


def test_sub_parsers_share_the_conventions():
    parser = Parser()
    sub = parser.add_subparsers(dest="kind", required=True).add_parser("voc")
    sub.add_argument("--flag", action="store_true", help="a flag")
    assert isinstance(sub, Parser)
    assert "a flag (default: off)" in sub.format_help()
    with pytest.raises(UserError, match="unrecognized arguments: --nope"):
        parser.parse_args(["voc", "--nope"])


@pytest.mark.parametrize("name", sorted(CLIS))
def test_every_cli_uses_the_parser(name):
    parser = CLIS[name].build_parser()
    assert isinstance(parser, Parser)
    text = " ".join(parser.format_help().split())
    if name in ("yolo", "evaluate", "kmeans"):
        assert "--input-size SIZE" in text and SIZE_HELP in text


@pytest.mark.parametrize("name", ["yolo", "evaluate", "kmeans"])
def test_every_input_size_reads_width_x_height(name, tmp_path):
    argv = {"evaluate": ["--annotations", "a.txt"], "kmeans": ["a.txt"]}.get(name, [])
    args = CLIS[name].build_parser().parse_args(argv + ["--input-size", "608x416"])
    assert args.input_size == (416, 608)
    with pytest.raises(UserError, match="^--input-size 416,608: expected N"):
        CLIS[name].build_parser().parse_args(argv + ["--input-size", "416,608"])


def test_tensorflow_start_up_lines_stay_off_the_screen(tmp_path):
    """A tiny convert in a fresh process (TensorFlow loaded, a model built and
    saved): no oneDNN, CUDA, absl or cpu_feature_guard line on stderr."""
    cfg = tmp_path / "small.cfg"
    cfg.write_text(SMALL_CFG)
    random_weights(tmp_path / "small.weights", cfg)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    run = subprocess.run([sys.executable, str(ROOT / "convert.py"), str(cfg),
                          str(tmp_path / "small.weights"), str(tmp_path / "small.h5")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "wrote" in run.stdout and (tmp_path / "small.h5").is_file()
    for noise in ("oneDNN", "cpu_feature_guard", "absl", "CUDA", "cuda"):
        assert noise not in run.stderr, run.stderr
