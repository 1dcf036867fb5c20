"""What a loss consumes, stated as data columns, and the start-up check against what the data provides."""

from dataclasses import dataclass

from hydra.utils import get_class

from embedlab.errors import ConfigError


@dataclass(frozen=True)
class Signature:
    """Text columns in the order the loss reads them, an optional repeated text column, and an optional target.

    `repeated="negative"` accepts any number of columns named `negative`, `negative_1`, `negative_2`, ...
    """

    texts: tuple[str, ...]
    repeated: str | None = None
    target: str | None = None

    def describe(self) -> str:
        names = list(self.texts) + ([f"{self.repeated}*"] if self.repeated else []) + ([self.target] if self.target else [])
        return "(" + ", ".join(names) + ")"

    def text_columns(self, columns: tuple[str, ...]) -> list[str] | None:
        """The data's text columns in the loss's order, or None when the data does not fit."""
        required = set(self.texts) | ({self.target} if self.target else set())
        if not required <= set(columns):
            return None
        extra = [c for c in columns if c not in required]
        if any(not self._is_repeated(c) for c in extra):
            return None
        return list(self.texts) + sorted(extra, key=_repeat_index)

    def _is_repeated(self, column: str) -> bool:
        if self.repeated is None:
            return False
        suffix = column[len(self.repeated):]
        return column.startswith(self.repeated) and (suffix == "" or (suffix[0] == "_" and suffix[1:].isdigit()))


def _repeat_index(column: str) -> int:
    suffix = column.rpartition("_")[2]
    return int(suffix) if suffix.isdigit() else 0


def choose_format(loss_name: str, signature: Signature, data_name: str, formats: dict[str, tuple[str, ...]]) -> str:
    """Pick the data format whose columns fit the loss, or fail naming both sides."""
    for name, columns in formats.items():
        if signature.text_columns(columns) is not None:
            return name
    offered = " or ".join("(" + ", ".join(columns) + ")" for columns in formats.values())
    raise ConfigError(f"loss '{loss_name}' needs columns {signature.describe()} but data '{data_name}' provides "
                      f"{offered}")


def configured_loss_class(loss_cfg) -> type:
    """The class whose `signature`, `consumes` and `uses_in_batch_negatives` describe a configured loss, read from
    the config alone, before anything is built (`Loss.declared`: for a wrapper, the wrapped loss's class)."""
    loss_class = get_class(loss_cfg["_target_"])
    if not hasattr(loss_class, "declared"):
        raise ConfigError(f"loss {loss_cfg['_target_']} is not an embedlab Loss (embedlab.losses.base.Loss)")
    return loss_class.declared(loss_cfg)


def configured_losses(cfg) -> dict[str, object]:
    """The loss config of each training source: the data's own `losses` for a mixture of sources (which selects
    `loss=per_source`), else the one `loss`, for the data's name."""
    per_source = cfg.data.get("losses")
    if per_source is None:
        if cfg.loss.get("per_source"):
            raise ConfigError(f"loss=per_source takes each source's loss from data.losses, and data "
                              f"'{cfg.data.name}' has none: choose a loss")
        return {cfg.data.name: cfg.loss}
    if not cfg.loss.get("per_source"):
        raise ConfigError(f"data '{cfg.data.name}' gives each of its sources a loss (data.losses.<source>); "
                          "drop loss=..., or set it on a source with data.losses.<source>=...")
    return dict(per_source)
