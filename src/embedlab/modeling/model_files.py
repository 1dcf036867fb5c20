"""Finding, loading and atomically writing model folders, shared by the bi-encoder and the cross-encoder."""

import ctypes
import errno
import json
import os
import pickle
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import AutoTokenizer

from embedlab.errors import ConfigError, first_line
from embedlab.run_folder import MODEL_DIR

# A backbone that states no length limit of its own is cut here.
DEFAULT_MAX_SEQ_LENGTH_CAP = 512
# Every Hugging Face model folder has one; a sentence-transformers folder keeps its transformer's at the top.
MODEL_CONFIG = "config.json"
# The sentence-transformers layout's list of modules, the one file of a model without a transformer at its top
# (a static embedding, a router).
MODULES_FILE = "modules.json"
MODEL_MARKERS = (MODEL_CONFIG, MODULES_FILE)
# renameat2's "the current directory" and "exchange the two paths" (linux/fcntl.h, linux/fs.h).
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def resolve_location(name_or_path: str) -> Path | None:
    """A local model folder, or None for a hub id; a path-like name that does not exist, or a folder that holds
    no model (an empty folder, a run folder instead of its model/), is an error."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"model path '{name_or_path}' is a file; give the model's folder")
        if not holds_model(path):
            raise ConfigError(f"model path '{name_or_path}' holds no model: {_what_the_folder_holds(path)}")
        return path
    looks_like_path = path.is_absolute() or name_or_path.startswith((".", "~")) or name_or_path.count("/") > 1
    if looks_like_path:
        raise ConfigError(f"model path '{name_or_path}' does not exist")
    return None


def holds_model(folder: Path) -> bool:
    return any((folder / marker).is_file() for marker in MODEL_MARKERS)


def _what_the_folder_holds(path: Path) -> str:
    if holds_model(path / MODEL_DIR):
        return f"it is a run folder; its model is {path / MODEL_DIR}"
    if not any(path.iterdir()):
        return "the folder is empty"
    return f"there is no {' or '.join(MODEL_MARKERS)} in it"


def load_pretrained(location: str, auto_class, trust_remote_code: bool, tokenizer_location: str | None = None,
                    **model_kwargs):
    """A Hugging Face model (through `auto_class`, in float32) and its tokenizer (from `tokenizer_location` when
    it lives elsewhere), with one-line errors."""
    try:
        model = auto_class.from_pretrained(location, trust_remote_code=trust_remote_code, dtype=torch.float32,
                                           **model_kwargs)
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_location or location, trust_remote_code=trust_remote_code)
    except OSError as error:
        if Path(location).is_dir():
            raise ConfigError(f"could not load the model at '{location}': {first_line(error)}") from error
        raise ConfigError(f"could not load backbone '{location}': {first_line(error)}. Offline? Set "
                          "backbone.name_or_path to a local model folder.") from error
    # Hugging Face reports a damaged folder (no model_type, unreadable weights, a tokenizer it cannot build) with
    # many exception types; to the user each means this path does not hold a model it can load.
    except Exception as error:
        raise ConfigError(f"could not load the model at '{location}': {first_line(error)}") from error
    return model, tokenizer


def read_json(path: Path, kind: type = dict):
    """A JSON file of a model folder holding a `kind` (an object by default), or a one-line error naming it."""
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path} is not a readable JSON file: {first_line(error)}") from error
    if not isinstance(value, kind):
        raise ConfigError(f"{path} holds a JSON {type(value).__name__}, not the {kind.__name__} expected there")
    return value


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A Lightning checkpoint, loaded as weights only; a file that is not one, or that holds code or objects a
    weights-only load refuses, is a one-line error naming it."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message goes on to advise a load that runs the file's code: it is not repeated.
        named = re.search(r"GLOBAL ([\w.]+)", str(error))
        if named:
            raise ConfigError(f"checkpoint '{path}' was refused: it names {named[1]}, which a load of weights and "
                              "plain data, the only load embedlab makes, never runs or builds") from None
        reason = str(error).partition("WeightsUnpickler error:")[2].strip().splitlines()
        raise ConfigError(f"checkpoint '{path}' is not a PyTorch checkpoint ({reason[0] if reason else 'unreadable'})"
                          ) from None
    # torch reports a damaged or foreign file with many exception types (an IndexError for some garbage).
    except Exception as error:
        raise ConfigError(f"checkpoint '{path}' is not a PyTorch checkpoint: {first_line(error)}") from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ConfigError(f"checkpoint '{path}' holds no model weights (no state_dict): not a Lightning checkpoint")
    return checkpoint


def save_atomically(target: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Run `write` into a staging folder, then swap it in: at every moment `target` is the whole old model or the
    whole new one, and what an interrupted save left behind is cleared by the next save."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_interrupted_save(target)
    staging = _staging(target)
    # mkdir, unlike mkdtemp (0700), honours the user's umask: others may read the model if they may read the run.
    staging.mkdir()
    try:
        write(staging)
        _apply_umask(staging)
        _swap_in(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(staging, ignore_errors=True)
    return target


def recover_interrupted_save(target: str | os.PathLike) -> None:
    """After a save killed part way: put the previous model back if only it is left, and drop the staging folder."""
    target = Path(target)
    retired = _retired(target)
    if retired.is_dir() and not target.exists():
        os.replace(retired, target)
    for leftover in (retired, _staging(target)):
        shutil.rmtree(leftover, ignore_errors=True)


def _staging(target: Path) -> Path:
    return target.with_name(f".{target.name}.staging")


def _retired(target: Path) -> Path:
    return target.with_name(f".{target.name}.old")


def _swap_in(staging: Path, target: Path) -> None:
    """Afterwards `target` holds what `staging` held, and `staging` the old target (if there was one)."""
    if not target.exists():
        os.replace(staging, target)
    elif not _exchange(staging, target):
        # Two renames: a kill between them leaves the old model in .<name>.old, which the next save puts back.
        retired = _retired(target)
        os.replace(target, retired)
        try:
            os.replace(staging, target)
        except OSError:
            os.replace(retired, target)
            raise
        os.replace(retired, staging)


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    renameat2 = getattr(_libc(), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    if ctypes.get_errno() in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):  # a file system without the exchange
        return False
    raise OSError(ctypes.get_errno(), f"could not swap {first} and {second}")


def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _apply_umask(folder: Path) -> None:
    """Give every file and folder the modes the user's umask allows: some writers (safetensors) create 0600 files.
    The staging folder itself was made by mkdir with mode 0777, so its mode shows the umask."""
    folder_mode = folder.stat().st_mode & 0o777
    file_mode = folder_mode & 0o666
    for path in folder.rglob("*"):
        if not path.is_symlink():
            path.chmod(folder_mode if path.is_dir() else file_mode)


def default_max_seq_length(model, tokenizer) -> int:
    """The longest input both the tokenizer and the model's position embeddings allow, at most the cap."""
    limits = [DEFAULT_MAX_SEQ_LENGTH_CAP, tokenizer.model_max_length,
              getattr(model.config, "max_position_embeddings", DEFAULT_MAX_SEQ_LENGTH_CAP)]
    return int(min(limits))


def package_version() -> str:
    from embedlab import __version__

    return __version__
