"""The training entry point: `python train.py [overrides]` or `embedlab-train [overrides]`.

A plain run trains one model (`embedlab.assembly.run_training`); an experiment that names a `recipe` (a function
taking the config, such as `embedlab.recipes.augmented_sbert.run`) runs that pipeline instead.
"""

from hydra.utils import get_method
from omegaconf import DictConfig

from embedlab.assembly import run_training
from embedlab.cli import entry_point


def train(cfg: DictConfig) -> float | None:
    results = get_method(cfg.recipe)(cfg) if cfg.get("recipe") else run_training(cfg)
    metric = cfg.get("optimized_metric")
    return results.get(metric) if metric else None


main = entry_point("train", resumes="checkpoint")(train)

if __name__ == "__main__":
    main()
