"""The CSV metrics log of a run, kept whole across a resume (Lightning's CSVLogger deletes the earlier file)."""

import csv

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


class ResumableCSVLogger(CSVLogger):
    """`csv/metrics.csv` is appended to: a resumed run adds its rows after the interrupted run's, so the file holds
    the whole run. The interrupted run's rows from the step the resumed one logs first on are dropped, as the
    resumed run logs those steps again (after a kill, the steps since its last checkpoint)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment


class AppendingExperimentWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        self._earlier_rows: list[dict] | None = None
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
                reader = csv.DictReader(handle)
                self._earlier_rows = list(reader)
                self.metrics_keys = list(reader.fieldnames or [])

    def save(self) -> None:
        if self._earlier_rows is not None and self.metrics:
            first_step = min(row["step"] for row in self.metrics)
            kept = [row for row in self._earlier_rows if int(float(row["step"])) < first_step]
            with self._fs.open(self.metrics_file_path, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=self.metrics_keys)
                writer.writeheader()
                writer.writerows(kept)
            self._earlier_rows = None
        super().save()
