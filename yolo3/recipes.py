"""Training recipes: the defaults of the options that a recipe sets.

`faithful` is the original keras-yolo3 train.py (batch 32, Adam 1e-3 then 1e-4,
ReduceLROnPlateau and EarlyStopping in stage 2, one anchor per box, the xy BCE +
wh L2 box loss). `modern` is the combination that measured best on small real
sets (docs/recipes.md): more optimizer steps for the same epochs (batch 8),
AdamW with warmup and cosine decay, an EMA of the weights, mosaic, several
anchors per box and the CIoU box loss.

A TrainConfig field left at None takes its recipe's value (`resolve`), so any
single part can be set alone on top of either recipe."""
import dataclasses

from .errors import UserError
from .model import BOX_LOSSES

FAITHFUL = {
    "batch_size": 32, "unfreeze_batch_size": 32, "lr": 1e-3, "unfreeze_lr": 1e-4,
    "optimizer": "adam", "weight_decay": 0.0, "lr_schedule": "plateau",
    "warmup_epochs": 0.0, "final_lr": 0.01, "ema": False, "ema_decay": 0.9999,
    "ema_ramp": 2000,
    "mosaic": 0.0, "mixup": 0.0, "close_mosaic": 0, "iou_thresh": 0.0,
    "box_loss": "original", "iou_normalizer": 1.0, "label_smoothing": 0.0,
    "multi_scale": (), "accumulate": 1,
}

MODERN = {
    **FAITHFUL,
    "batch_size": 8, "unfreeze_batch_size": 8, "lr": 1e-3, "unfreeze_lr": 3e-4,
    "optimizer": "adamw", "weight_decay": 0.01, "lr_schedule": "cosine",
    "warmup_epochs": 1.0, "final_lr": 0.05, "ema": True, "ema_ramp": 200,
    "mosaic": 0.5, "close_mosaic": 5, "iou_thresh": 0.213, "box_loss": "ciou",
}

RECIPES = {"faithful": FAITHFUL, "modern": MODERN}


def resolve(cfg):
    """The config with every field left at None set by its recipe (cfg.recipe)."""
    table = RECIPES[cfg.recipe]
    return dataclasses.replace(cfg, **{name: value for name, value in table.items()
                                       if getattr(cfg, name) is None})


def describe(name):
    """One line per option that the recipe sets differently from faithful."""
    table = RECIPES[name]
    return [f"{key.replace('_', '-')} {value}" for key, value in table.items()
            if FAITHFUL[key] != value]


OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("plateau", "cosine")


def _check_fraction(flag, value, low=0.0, high=1.0, high_open=False):
    inside = low <= value < high if high_open else low <= value <= high
    if not inside:
        bracket = ")" if high_open else "]"
        raise UserError(f"{flag} {value:g}: must be in [{low:g}, {high:g}{bracket}")


def check(cfg):
    """UserError naming the flag and value of a part set outside its range."""
    if cfg.recipe not in RECIPES:
        raise UserError(f"--recipe {cfg.recipe}: choose {' or '.join(RECIPES)}")
    for flag, value, choices in (("--optimizer", cfg.optimizer, OPTIMIZERS),
                                 ("--box-loss", cfg.box_loss, BOX_LOSSES),
                                 ("--lr-schedule", cfg.lr_schedule, LR_SCHEDULES)):
        if value not in choices:
            raise UserError(f"{flag} {value}: choose one of {', '.join(choices)}")
    _check_fraction("--mosaic", cfg.mosaic)
    _check_fraction("--mixup", cfg.mixup)
    _check_fraction("--iou-thresh", cfg.iou_thresh, high_open=True)
    _check_fraction("--label-smoothing", cfg.label_smoothing, high_open=True)
    _check_fraction("--final-lr", cfg.final_lr)
    _check_fraction("--ema-decay", cfg.ema_decay, high_open=True)
    for flag, value in (("--weight-decay", cfg.weight_decay), ("--momentum", cfg.momentum),
                        ("--warmup-epochs", cfg.warmup_epochs),
                        ("--close-mosaic", cfg.close_mosaic),
                        ("--iou-normalizer", cfg.iou_normalizer)):
        if value < 0:
            raise UserError(f"{flag} {value:g}: must not be negative")
    for flag, value in (("--accumulate", cfg.accumulate), ("--scale-every", cfg.scale_every),
                        ("--ema-ramp", cfg.ema_ramp)):
        if value < 1:
            raise UserError(f"{flag} {value}: must be at least 1")
    if cfg.optimizer == "adam" and cfg.weight_decay > 0:
        raise UserError(f"--weight-decay {cfg.weight_decay:g} with --optimizer adam: Adam "
                        "has no decoupled weight decay; use --optimizer adamw")
