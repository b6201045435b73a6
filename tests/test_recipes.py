"""The recipes' defaults: resolution, explicit values winning, range checks, and
the train.py flags that carry them."""
import dataclasses

import pytest

from yolo3 import recipes
from yolo3.errors import UserError
from yolo3.trainer import TrainConfig


def test_faithful_resolves_to_the_original_train_py():
    cfg = recipes.resolve(TrainConfig())
    assert (cfg.batch_size, cfg.unfreeze_batch_size, cfg.lr, cfg.unfreeze_lr) == \
        (32, 32, 1e-3, 1e-4)
    assert (cfg.optimizer, cfg.weight_decay, cfg.lr_schedule, cfg.ema) == \
        ("adam", 0.0, "plateau", False)
    assert (cfg.mosaic, cfg.mixup, cfg.iou_thresh, cfg.box_loss, cfg.label_smoothing,
            cfg.multi_scale, cfg.accumulate) == (0.0, 0.0, 0.0, "original", 0.0, (), 1)


def test_every_recipe_field_is_a_config_field_left_to_the_recipe():
    defaults = TrainConfig()
    for table in recipes.RECIPES.values():
        assert set(table) == set(recipes.FAITHFUL)
        for name in table:
            assert getattr(defaults, name) is None, name


def test_modern_sets_its_parts_and_an_explicit_value_wins():
    cfg = recipes.resolve(TrainConfig(recipe="modern", mosaic=0.0, batch_size=16))
    assert cfg.mosaic == 0.0 and cfg.batch_size == 16          # given: kept
    assert cfg.box_loss == "ciou" and cfg.ema is True           # not given: modern's
    assert cfg.unfreeze_batch_size == recipes.MODERN["unfreeze_batch_size"]
    # an explicit faithful part on modern, and a modern part on faithful
    cfg = recipes.resolve(TrainConfig(box_loss="giou"))
    assert cfg.box_loss == "giou" and cfg.mosaic == 0.0


def test_describe_lists_what_differs_from_faithful():
    assert recipes.describe("faithful") == []
    lines = recipes.describe("modern")
    assert "box-loss ciou" in lines and "mosaic 0.5" in lines
    assert not any(line.startswith("mixup") for line in lines)   # same as faithful


@pytest.mark.parametrize("change, message", [
    ({"recipe": "fast"}, "--recipe fast: choose faithful or modern"),
    ({"box_loss": "l1"}, "--box-loss l1: choose one of original, iou, giou, diou, ciou"),
    ({"mosaic": 1.5}, "--mosaic 1.5: must be in [0, 1]"),
    ({"iou_thresh": 1.0}, "--iou-thresh 1: must be in [0, 1)"),
    ({"label_smoothing": -0.1}, "--label-smoothing -0.1: must be in [0, 1)"),
    ({"accumulate": 0}, "--accumulate 0: must be at least 1"),
    ({"warmup_epochs": -1.0}, "--warmup-epochs -1: must not be negative"),
    ({"weight_decay": 0.01}, "--weight-decay 0.01 with --optimizer adam: Adam has no "
                             "decoupled weight decay; use --optimizer adamw"),
])
def test_bad_parts_are_refused_naming_flag_and_value(change, message):
    cfg = dataclasses.replace(TrainConfig(), **change)
    if change.get("recipe") != "fast":
        cfg = recipes.resolve(cfg)
    with pytest.raises(UserError) as error:
        recipes.check(cfg)
    assert str(error.value) == message


def test_train_py_flags_reach_the_config_and_help_names_both_recipes():
    import train
    parser = train.build_parser()
    cfg = train.config_from_args(parser.parse_args(
        ["--recipe", "modern", "--no-ema", "--multi-scale", "320-608", "--mosaic", "0",
         "--box-loss", "diou"]))
    assert (cfg.recipe, cfg.ema, cfg.multi_scale, cfg.mosaic, cfg.box_loss) == \
        ("modern", False, (320, 608), 0.0, "diou")
    assert cfg.mixup is None and cfg.batch_size is None        # left to the recipe
    assert train.config_from_args(parser.parse_args(["--multi-scale", "off"])).multi_scale \
        == ()
    text = parser.format_help()
    assert "(default: faithful 32, modern 8)" in text
    assert "(default: faithful original, modern ciou)" in " ".join(text.split())
    with pytest.raises(UserError, match="--multi-scale 320-600: LOW <= HIGH"):
        parser.parse_args(["--multi-scale", "320-600"])
