"""The Optuna sweeper of `hparams_search=optuna`, a Hydra Sweeper plugin over Optuna 4 and later (Hydra only
instantiates sweepers from the hydra_plugins package; its config is conf/hydra/sweeper/embedlab_optuna.yaml).

Each trial is one job of the multirun: its parameters are sampled from the search space of `params` (Hydra's sweep
syntax: `choice(16, 32)`, `interval(0, 0.2)`, `tag(log, interval(1e-5, 1e-4))`, `range(1, 5)`), joined by the command
line's overrides (a sweep there adds to the space, a plain value fixes the key), and the job returns the optimised
metric. The study lives in `storage` and outlives the process: `n_trials` is the size of the whole study, so the
same command over the same `hydra.sweep.dir` runs only the trials still missing, a trial cut off mid-run being
marked failed and run again. Job folder N is trial N. A job stopped by the pruner (embedlab.sweeps.OptunaPruning)
is recorded as pruned.

Optuna is imported when a sweep starts: Hydra imports every plugin module at every start, and Optuna takes seconds.
"""

import logging
import re
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
)
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from embedlab.errors import ConfigError
from embedlab.sweeps import mark_cut_off_trials_failed, trials_in_flight

log = logging.getLogger(__name__)
# A value that Hydra's override grammar reads back as the same string without quotes.
PLAIN_VALUE = re.compile(r"[\w.+\-/:]+")


class EmbedlabOptunaSweeper(Sweeper):
    """`sampler` and `pruner` arrive built: Hydra instantiates a plugin's config recursively."""

    def __init__(self, storage: str | None, study_name: str, direction: str, n_trials: int, n_jobs: int,
                 sampler, pruner, params: DictConfig | None):
        self.storage = storage
        self.study_name = study_name
        self.direction = direction
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.sampler = sampler
        self.pruner = pruner
        self.params = OmegaConf.to_container(params) if params else {}
        self.config: DictConfig | None = None
        self.launcher = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        import optuna

        if self.n_jobs < 1 or self.n_trials < 0:
            raise ConfigError(f"hydra.sweeper.n_jobs must be at least 1 and n_trials at least 0, got {self.n_jobs} "
                              f"and {self.n_trials}")
        Path(self.config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)
        space, fixed = search_space(self.params, arguments)
        study = optuna.create_study(study_name=self.study_name, storage=self.storage, direction=self.direction,
                                    sampler=self.sampler, pruner=self.pruner or optuna.pruners.NopPruner(),
                                    load_if_exists=True)
        done = mark_cut_off_trials_failed(study)
        if study.trials:
            log.info("resuming study %s: %d of %d trials done", self.study_name, done, self.n_trials)
            # A sampler seeded as in the first process would propose the first process's trials again.
            study.sampler.reseed_rng()
        while done < self.n_trials:
            trials = [study.ask(space) for _ in range(min(self.n_jobs, self.n_trials - done))]
            done += self._run(study, trials, fixed)
        if any(trial.state == optuna.trial.TrialState.COMPLETE for trial in study.trials):
            log.info("best trial %d: %s %s", study.best_trial.number, study.best_value, study.best_params)

    def _run(self, study, trials: list, fixed: list[str]) -> int:
        """Run the trials as jobs numbered as they are; tell the study each outcome. Returns how many ended
        complete or pruned."""
        import optuna
        from optuna.trial import TrialState

        batch = [[*fixed, *(f"{key}={override_value(value)}" for key, value in trial.params.items())]
                 for trial in trials]
        self.validate_batch_is_legal(batch)
        with trials_in_flight(trials):
            returns = self.launcher.launch(batch, initial_job_idx=trials[0].number)
        finished = 0
        for trial, job in zip(trials, returns):
            try:
                value = job.return_value
            except optuna.TrialPruned as pruned:
                study.tell(trial, state=TrialState.PRUNED)
                log.info("trial %d pruned: %s", trial.number, pruned)
                finished += 1
                continue
            except Exception:  # a job's failure is the trial's, and the study goes on with the next
                study.tell(trial, state=TrialState.FAIL)
                log.exception("trial %d failed", trial.number)
                continue
            if value is None:
                study.tell(trial, state=TrialState.FAIL)
                log.error("trial %d returned no value: set optimized_metric to a metric the run logs", trial.number)
                continue
            study.tell(trial, float(value))
            finished += 1
        return finished


def search_space(params: dict, arguments: list[str]) -> tuple[dict, list[str]]:
    """The Optuna distributions of the swept keys, and the fixed overrides every job gets: the config's `params`,
    then the command line's overrides (a sweep there joins the space, a plain value fixes its key)."""
    parser = OverridesParser.create()
    space = {key: distribution(parser.parse_override(f"{key}={value}")) for key, value in params.items()}
    fixed = []
    for override in parser.parse_overrides(arguments):
        key = override.get_key_element()
        if override.is_sweep_override():
            space[key] = distribution(override)
        else:
            space.pop(key, None)
            fixed.append(override.input_line)
    return space, fixed


def distribution(override: Override):
    """The Optuna distribution of one sweep override."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    sweep = override.value()
    key = override.get_key_element()
    if isinstance(sweep, ChoiceSweep):
        return CategoricalDistribution(list(override.sweep_iterator()))
    log_scale = "log" in sweep.tags
    if isinstance(sweep, IntervalSweep):
        if isinstance(sweep.start, int) and isinstance(sweep.end, int):
            return IntDistribution(sweep.start, sweep.end, log=log_scale)
        return FloatDistribution(sweep.start, sweep.end, log=log_scale)
    if isinstance(sweep, RangeSweep):
        values = list(sweep.range())
        if not values:
            raise ConfigError(f"{key}: range({sweep.start}, {sweep.stop}, {sweep.step}) holds no value")
        if all(isinstance(value, int) for value in values):
            return IntDistribution(values[0], values[-1], step=sweep.step, log=log_scale)
        return FloatDistribution(values[0], values[-1], step=sweep.step, log=log_scale)
    raise ConfigError(f"{key}: the Optuna sweeper takes choice(...), interval(...) or range(...), got {override.input_line}")


def override_value(value) -> str:
    """A sampled value as the override syntax writes it."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)) or PLAIN_VALUE.fullmatch(str(value)):
        return str(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"
