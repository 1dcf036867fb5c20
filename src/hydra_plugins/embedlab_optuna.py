"""The Optuna sweeper of `hparams_search=optuna`; Hydra only instantiates sweepers from the hydra_plugins package."""

import logging
from pathlib import Path

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

from embedlab.sweeps import existing_trials, sqlite_storage

log = logging.getLogger(__name__)


class ResumableOptunaSweeper(OptunaSweeper):
    """The Hydra Optuna sweeper with a study that outlives the process.

    `n_trials` is the size of the whole study: rerunning an interrupted sweep's command with the same
    `hydra.sweep.dir` (so the same sqlite storage) runs only the trials still missing, a trial cut off mid-run
    being marked failed and run again. Job numbers continue from the study's trial numbers, so job folder N is
    trial N and no earlier trial's folder is overwritten.
    """

    def sweep(self, arguments: list[str]) -> None:
        # Imported here: optuna takes seconds to import, and every run loads this module for SweepSummary.
        from optuna.trial import TrialState

        sweeper = self.sweeper
        Path(sweeper.config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)
        if isinstance(sweeper.storage, str) and sweeper.storage.startswith("sqlite:"):
            sweeper.storage = sqlite_storage(sweeper.storage)
        trials = existing_trials(sweeper.study_name, sweeper.storage)
        if trials:
            done = sum(trial.state in (TrialState.COMPLETE, TrialState.PRUNED) for trial in trials)
            log.info("resuming study %s: %d of %d trials done", sweeper.study_name, done, sweeper.n_trials)
            sweeper.n_trials = max(0, sweeper.n_trials - done)
            sweeper.job_idx = len(trials)
            # A sampler seeded as in the first process would propose the first process's trials again.
            if hasattr(sweeper.sampler, "reseed_rng"):
                sweeper.sampler.reseed_rng()
        super().sweep(arguments)
