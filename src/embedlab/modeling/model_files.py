"""Finding, loading and atomically writing model folders, shared by the bi-encoder and the cross-encoder."""

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import AutoTokenizer

from embedlab.errors import ConfigError, first_line

# A backbone that states no length limit of its own is cut here.
DEFAULT_MAX_SEQ_LENGTH_CAP = 512


def resolve_location(name_or_path: str) -> Path | None:
    """A local folder, or None for a hub id; a path-like name that does not exist is an error."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"backbone path '{name_or_path}' is a file; give the model's folder")
        return path
    looks_like_path = path.is_absolute() or name_or_path.startswith((".", "~")) or name_or_path.count("/") > 1
    if looks_like_path:
        raise ConfigError(f"backbone path '{name_or_path}' does not exist")
    return None


def load_pretrained(location: str, auto_class, trust_remote_code: bool, tokenizer_location: str | None = None,
                    **model_kwargs):
    """A Hugging Face model (through `auto_class`, in float32) and its tokenizer (from `tokenizer_location` when
    it lives elsewhere), with one-line errors."""
    try:
        model = auto_class.from_pretrained(location, trust_remote_code=trust_remote_code, dtype=torch.float32,
                                           **model_kwargs)
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_location or location, trust_remote_code=trust_remote_code)
    except OSError as error:
        raise ConfigError(f"could not load backbone '{location}': {first_line(error)}. Offline? Set "
                          "backbone.name_or_path to a local model folder.") from error
    return model, tokenizer


def save_atomically(target: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Run `write` into a staging folder, then swap it in: a failed save leaves an older model intact."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        write(staging)
        _replace_directory(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _replace_directory(staging: Path, target: Path) -> None:
    if not target.exists():
        os.replace(staging, target)
        return
    retired = target.with_name(f".{target.name}.old")
    shutil.rmtree(retired, ignore_errors=True)
    os.replace(target, retired)
    os.replace(staging, target)
    shutil.rmtree(retired, ignore_errors=True)


def default_max_seq_length(model, tokenizer) -> int:
    """The longest input both the tokenizer and the model's position embeddings allow, at most the cap."""
    limits = [DEFAULT_MAX_SEQ_LENGTH_CAP, tokenizer.model_max_length,
              getattr(model.config, "max_position_embeddings", DEFAULT_MAX_SEQ_LENGTH_CAP)]
    return int(min(limits))


def package_version() -> str:
    from embedlab import __version__

    return __version__
