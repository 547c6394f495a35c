"""Which epoch a run exports, its learning rate each epoch, and when it stops early.

Each is a pure function of the run's settings and its history (the per-epoch records that every
checkpoint carries), so a run killed and resumed from a checkpoint continues with the same
learning rate, the same best epoch and the same early-stopping count as if it had never stopped.

    select          val_loss (lowest, the default) | val_auc (highest) | last
    lr_schedule     none | cosine (lr * (1 + cos(pi * epoch / epochs)) / 2) |
                    plateau (lr * plateau_factor after plateau_patience epochs without a better
                    monitored value, counted again from each drop)
    early_stopping  stop after this many epochs without a better monitored value (0: never)

The monitored value is the selection metric (``val_loss`` when ``select`` is ``last``). Better
means strictly better, so among equal values the earliest epoch wins.
"""
from __future__ import annotations

import math

from dfd.config import TrainConfig

SELECT = {"val_loss": "min", "val_auc": "max", "last": None}
LR_SCHEDULES = ("none", "cosine", "plateau")


def check(cfg: TrainConfig) -> None:
    """Raise ValueError for selection, schedule or early-stopping settings that cannot run."""
    if cfg.select not in SELECT:
        raise ValueError(f"unknown --select {cfg.select!r}; one of {list(SELECT)}")
    if cfg.lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown --lr-schedule {cfg.lr_schedule!r}; one of "
                         f"{list(LR_SCHEDULES)}")
    if cfg.early_stopping < 0:
        raise ValueError(f"--early-stopping is a patience in epochs (0: off), got "
                         f"{cfg.early_stopping}")
    if cfg.plateau_patience < 1:
        raise ValueError(f"--plateau-patience must be at least 1, got {cfg.plateau_patience}")
    if not 0 < cfg.plateau_factor < 1:
        raise ValueError(f"--plateau-factor must be between 0 and 1, got {cfg.plateau_factor}")


def monitored(cfg: TrainConfig) -> str:
    """The validation metric that selection, the plateau schedule and early stopping watch."""
    return "val_loss" if cfg.select == "last" else cfg.select


def _better(value: float, best: float, metric: str) -> bool:
    return value < best if SELECT.get(metric, "min") == "min" else value > best


def best_epoch(history: list[dict], metric: str) -> int:
    """The epoch with the best value of ``metric`` (the earliest among equals)."""
    best = None
    for record in history:
        if best is None or _better(record[metric], best[metric], metric):
            best = record
    if best is None:
        raise ValueError("no epochs to choose from")
    return best["epoch"]


def selected_epoch(cfg: TrainConfig, history: list[dict]) -> int:
    """The epoch whose model the run exports."""
    if cfg.select == "last":
        return history[-1]["epoch"]
    return best_epoch(history, cfg.select)


def learning_rate(cfg: TrainConfig, epoch: int, history: list[dict]) -> float:
    """The learning rate of ``epoch``, given the records of the epochs before it."""
    if cfg.lr_schedule == "cosine":
        return cfg.learning_rate * 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))
    if cfg.lr_schedule != "plateau":
        return cfg.learning_rate
    metric, rate, best, waited = monitored(cfg), cfg.learning_rate, None, 0
    for record in history:
        if record["epoch"] >= epoch:
            break
        if best is None or _better(record[metric], best, metric):
            best, waited = record[metric], 0
            continue
        waited += 1
        if waited >= cfg.plateau_patience:
            rate, waited = rate * cfg.plateau_factor, 0
    return rate


def early_stop(cfg: TrainConfig, history: list[dict]) -> dict | None:
    """Why training stops before cfg.epochs, once the monitored metric has not improved for
    ``early_stopping`` epochs; None while it goes on (and always when early stopping is off)."""
    if not cfg.early_stopping or not history:
        return None
    metric = monitored(cfg)
    best, last = best_epoch(history, metric), history[-1]["epoch"]
    if last - best < cfg.early_stopping:
        return None
    return {"after_epoch": last, "patience": cfg.early_stopping, "metric": metric,
            "best_epoch": best}


def selection_record(cfg: TrainConfig, history: list[dict], *, exported_epoch: int) -> dict:
    """What ``selection.json`` says: the epoch exported, by which rule, and why training ended."""
    wanted = selected_epoch(cfg, history)
    by_epoch = {h["epoch"]: h for h in history}
    metric = monitored(cfg)
    if cfg.select == "last":
        reason = f"the last epoch ({exported_epoch}) of {len(history)}"
    else:
        word = "lowest" if SELECT[cfg.select] == "min" else "highest"
        reason = (f"the {word} {cfg.select} ({by_epoch[exported_epoch][cfg.select]:.4f}) of "
                  f"epochs {history[0]['epoch']}-{history[-1]['epoch']}")
    if exported_epoch != wanted:
        # Only a checkpoint written before model selection existed lacks the chosen weights.
        reason = (f"epoch {wanted} would have been chosen, but its weights were not kept; "
                  f"exported the best kept one")
    # Stopping counts as early only where epochs were left to train.
    stopped = early_stop(cfg, history) if len(history) < cfg.epochs else None
    return {"select": cfg.select, "epoch": exported_epoch, "reason": reason,
            "metric": metric, "value": by_epoch[exported_epoch][metric],
            "epochs_trained": len(history), "last_epoch": history[-1]["epoch"],
            "lr_schedule": cfg.lr_schedule,
            "learning_rates": [h.get("lr") for h in history],
            "early_stopping": cfg.early_stopping or None, "stopped_early": stopped}
