"""Secrets never reach a log, a logger or a run directory: configs are redacted before they are written."""

import os
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

# Names of environment variables and config keys whose values are secrets.
SECRET_NAME = re.compile(r"(^|_)(API_?KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)($|_)", re.IGNORECASE)
# Shorter values (a flag such as "1") would redact innocent text everywhere.
MIN_SECRET_LENGTH = 8
REDACTED = "<redacted>"


def secret_values() -> list[str]:
    """The values of the secret-named environment variables (WANDB_API_KEY, HF_TOKEN, ...), longest first."""
    return sorted((text for name, text in os.environ.items()
                   if SECRET_NAME.search(name) and len(text) >= MIN_SECRET_LENGTH), key=len, reverse=True)


def redact_secrets(value):
    """The value with every secret replaced: values of secret-named keys, and any text holding the value of a
    secret-named environment variable (WANDB_API_KEY, HF_TOKEN, ...), as a config can pull it in via oc.env."""
    secrets = secret_values()

    def redact(item, key: str = ""):
        if isinstance(item, dict):
            return {name: redact(inner, str(name)) for name, inner in item.items()}
        if isinstance(item, list):
            return [redact(inner) for inner in item]
        if isinstance(item, str):
            if SECRET_NAME.search(key) and item:
                return REDACTED
            for secret in secrets:
                item = item.replace(secret, REDACTED)
        return item

    return redact(value)


def loggable_config(cfg: DictConfig) -> dict:
    """The resolved config as plain containers, secrets redacted: what may be written or logged anywhere."""
    return redact_secrets(OmegaConf.to_container(cfg, resolve=True))


def save_config(cfg: DictConfig, path: str | os.PathLike) -> Path:
    """Write the resolved, redacted config as YAML."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(loggable_config(cfg)), path)
    return path
