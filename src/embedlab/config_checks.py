"""A training config checked before anything loads: the required keys, the type and range of each number, the
enumerations, and the settings each configured class accepts. Each mistake is one line naming the key, the value
and what is allowed, where otherwise a traceback would come from deep inside Lightning, or after training began.
"""

import difflib
import inspect
import math
import typing
from collections.abc import Callable
from dataclasses import dataclass

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from embedlab.errors import ConfigError

SAVE_MODEL_CHOICES = ("final", "best")
BAD_ROW_CHOICES = ("error", "skip")
# The groups whose nodes Hydra instantiates, so every key of a node must be a parameter of its _target_.
INSTANTIATED = ("data", "loss", "trainer", "callbacks", "logger", "evaluation")
# Hydra's own keys in an instantiated node.
HYDRA_KEYS = {"_target_", "_convert_", "_recursive_", "_partial_", "_args_"}


@dataclass(frozen=True)
class Whole:
    """A whole number of at least `minimum`; `no_limit` (-1) allowed where Lightning reads it as unlimited."""

    minimum: int
    no_limit: bool = False
    nullable: bool = False

    def problem(self, value) -> str | None:
        if value is None and self.nullable:
            return None
        limit = " or -1 (no limit)" if self.no_limit else ""
        null = " or null (all)" if self.nullable else ""
        if not isinstance(value, int) or isinstance(value, bool):
            return f"a whole number of at least {self.minimum}{limit}{null}"
        if value < self.minimum and not (self.no_limit and value == -1):
            return f"at least {self.minimum}{limit}{null}"
        return None


@dataclass(frozen=True)
class Number:
    """A finite number in [low, high] (`above_low`: excluding low)."""

    low: float
    high: float = math.inf
    above_low: bool = False

    def problem(self, value) -> str | None:
        upper = f" and at most {self.high:g}" if self.high != math.inf else ""
        allowed = f"a number {'above' if self.above_low else 'of at least'} {self.low:g}{upper}"
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            return allowed
        if value < self.low or (self.above_low and value == self.low) or value > self.high:
            return allowed
        return None


@dataclass(frozen=True)
class OneOf:
    choices: Callable[[], tuple]

    def problem(self, value) -> str | None:
        choices = self.choices()
        return None if value in choices else "one of " + ", ".join(str(choice) for choice in choices)


# precision=auto: the hardware's choice, made by embedlab.modeling.precision.resolve_precision before Lightning
# sees the config.
AUTO_PRECISION = "auto"


def _precisions() -> tuple:
    from lightning.fabric.plugins.precision.precision import _PRECISION_INPUT

    return (AUTO_PRECISION,
            *(choice for member in typing.get_args(_PRECISION_INPUT) for choice in typing.get_args(member)))


def _strategies() -> tuple:
    from lightning.pytorch.strategies import StrategyRegistry

    return ("auto", *StrategyRegistry.available_strategies())


RULES = {
    "optim.lr": Number(0, above_low=True),
    "optim.weight_decay": Number(0),
    "optim.warmup_ratio": Number(0, 1),
    "trainer.max_epochs": Whole(1, no_limit=True),
    "trainer.max_steps": Whole(1, no_limit=True),
    "trainer.log_every_n_steps": Whole(1),
    "trainer.accumulate_grad_batches": Whole(1),
    "eval_every_n_steps": Whole(1),
    "data.batch_size": Whole(1),
    "data.eval_batch_size": Whole(1),
    "data.num_workers": Whole(0),
    "data.max_rows": Whole(1, nullable=True),
    "seed": Whole(0),
    "save_model": OneOf(lambda: SAVE_MODEL_CHOICES),
    "merge_with_start": Number(0, 1),
    "data.on_bad_row": OneOf(lambda: BAD_ROW_CHOICES),
    "precision": OneOf(_precisions),
    "trainer.strategy": OneOf(_strategies),
}
ABSENT = object()


def check_training_config(cfg: DictConfig) -> None:
    """Raise a ConfigError for the first mistake found in a training run's config."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"{', '.join(missing)} must be set (the config leaves {'them' if len(missing) > 1 else 'it'}"
                          " as ???)")
    for key, rule in RULES.items():
        value = OmegaConf.select(cfg, key, default=ABSENT)
        if value is not ABSENT:
            allowed = rule.problem(value)
            if allowed:
                raise ConfigError(f"{key} must be {allowed}, got {value!r}")
    if cfg.trainer.get("max_epochs") == -1 and cfg.trainer.get("max_steps", -1) == -1:
        raise ConfigError("trainer.max_epochs=-1 trains without end: set trainer.max_steps=N, or trainer.max_epochs "
                          "to a number of epochs")
    if cfg.trainer.get("enable_progress_bar") is False and (cfg.get("callbacks") or {}).get("progress"):
        raise ConfigError("trainer.enable_progress_bar=false: turn the progress display off with callbacks.progress=null "
                          "instead (Lightning refuses a progress callback beside it)")
    if cfg.get("merge_with_start") and (not hasattr(get_object(cfg.model._target_), "merge_with_start")
                                         or cfg.get("adapter")):
        raise ConfigError("merge_with_start: only a bi-encoder that trains its own weights (no adapter) is merged "
                          "with its starting model")
    for group in INSTANTIATED:
        if group in cfg:
            _check_settings(cfg[group], group)
    _check_keys(cfg.get("optim") or {}, "optim", get_object(cfg.model._target_), "the model's optimiser")


def _check_settings(node, path: str) -> None:
    """Every key of every instantiated node under `node` must be a parameter of its _target_."""
    if isinstance(node, DictConfig):
        if "_target_" in node:
            try:
                target = get_object(node._target_)
            except (ImportError, AttributeError, ValueError) as error:
                raise ConfigError(f"{path}._target_: cannot import {node._target_!r} ({error})") from error
            _check_keys(node, path, target, node._target_)
        for key, child in node.items_ex(resolve=False):
            _check_settings(child, f"{path}.{key}")


def _check_keys(node, path: str, target, described: str) -> None:
    accepted = _parameters(target)
    if accepted is None:
        return
    for key in node:
        if key not in accepted and key not in HYDRA_KEYS:
            close = difflib.get_close_matches(str(key), sorted(accepted), n=1)
            hint = f"did you mean {path}.{close[0]}?" if close else f"its settings: {', '.join(sorted(accepted))}"
            raise ConfigError(f"{path}.{key} is not a setting of {described} ({hint})")


def _parameters(target) -> set[str] | None:
    """The keyword parameters `target` accepts, following **kwargs up a class's bases; None when any is taken."""
    functions = [base.__dict__["__init__"] for base in target.__mro__ if "__init__" in base.__dict__] \
        if inspect.isclass(target) else [target]
    accepted: set[str] = set()
    for function in functions:
        try:
            parameters = inspect.signature(function).parameters.values()
        except (TypeError, ValueError):
            return None
        accepted |= {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"self"}
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            return accepted
    return None
