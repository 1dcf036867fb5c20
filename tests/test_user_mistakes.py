"""What a user gets wrong, run as the user would type it: each mistake ends in one `embedlab: error:` line (or a
warning) and leaves an earlier run's files as they were; nothing a run could do silently goes unsaid.

Runs stopped before they train go through train.py's entry point in this process (tests/cli.py `train_here`);
those that need a process of their own (two at once) start one.
"""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from cli import (
    OFFLINE,
    ROOT,
    assert_one_line_error,
    run_here,
    train_arguments,
    train_here,
)
from hydra import compose, initialize_config_dir

from embedlab.cli import entry_point
from embedlab.config import CONF_DIR, RUN_ID
from embedlab.evaluation.job import evaluate
from embedlab.modeling import model_files
from embedlab.modeling.encoder import SentenceEncoder
from embedlab.objectives.callbacks import StepsProgressBar, batches_this_epoch

TESTS_DIR = Path(__file__).resolve().parent
STSB = ("experiment=stsb_cosine",)
MARKER = "embedlab-malicious-pickle-ran"


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones too) by its content's hash: equal snapshots, untouched files."""
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file() and path.name != ".lock"}


@pytest.fixture
def here(capfd, monkeypatch, tiny_data_dir, tiny_model_dir):
    """`here(*overrides, run_dir=...)`: train.py with the tiny model and data, in this process."""
    def run(*overrides, run_dir, backbone=tiny_model_dir):
        return train_here(capfd, monkeypatch, *overrides, run_dir=run_dir, data_dir=tiny_data_dir, backbone=backbone)
    return run


@pytest.fixture
def finished_run(here, tmp_path) -> Path:
    run_dir = tmp_path / "finished"
    result = here(*STSB, "trainer.max_steps=3", "trainer.log_every_n_steps=1", run_dir=run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


# 2. A run folder belongs to one run.

def test_a_new_run_in_a_finished_runs_folder_is_refused_and_changes_nothing(here, finished_run):
    before = snapshot(finished_run)
    result = here(*STSB, "trainer.max_steps=2", run_dir=finished_run)
    assert_one_line_error(result, f"run folder {finished_run} holds an earlier run (results.json, model, "
                                  "checkpoints/epoch=0-step=")
    assert f"ckpt); resume it with resume={finished_run}, or replace it with overwrite=true" in result.stderr
    assert snapshot(finished_run) == before


def test_an_evaluation_into_a_runs_folder_is_refused_with_what_evaluate_can_do(finished_run, capfd, monkeypatch,
                                                                                tiny_model_dir, tiny_data_dir):
    before = snapshot(finished_run)
    result = run_here(entry_point("evaluate")(evaluate),
                      ["evaluate.py", f"model_path={tiny_model_dir}", "evaluation=stsb",
                       f"paths.data_dir={tiny_data_dir}", f"hydra.run.dir={finished_run}"], capfd, monkeypatch)
    assert_one_line_error(result, f"run folder {finished_run} holds an earlier run (results.json, model, ")
    # evaluate.py has neither resume= nor overwrite=: the line offers neither.
    assert result.stderr.rstrip().endswith("ckpt); choose another hydra.run.dir")
    assert snapshot(finished_run) == before


def test_overwrite_replaces_the_earlier_run_whole(here, finished_run):
    earlier_results = (finished_run / "results.json").read_text()
    result = here(*STSB, "trainer.max_steps=2", "overwrite=true", run_dir=finished_run)
    assert result.returncode == 0, result.stderr[-3000:]
    # No last-v1.ckpt beside a stale last.ckpt, and no checkpoint of the earlier run's step 3.
    assert sorted(path.name for path in (finished_run / "checkpoints").iterdir()) == ["epoch=0-step=2.ckpt",
                                                                                       "last.ckpt"]
    assert torch.load(finished_run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    assert (finished_run / "results.json").read_text() != earlier_results
    # The metrics log is this run's alone: the earlier run logged up to step 3.
    header, *rows = (finished_run / "csv" / "metrics.csv").read_text().splitlines()
    column = header.split(",").index("step")
    assert max(int(row.split(",")[column]) for row in rows) == 2
    assert "trainer.max_steps=2" in (finished_run / ".hydra" / "overrides.yaml").read_text()


def test_default_run_folders_end_with_the_process_id_that_no_other_run_shares():
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", return_hydra_config=True)
        run_dir, sweep_dir = str(cfg.hydra.run.dir), str(cfg.hydra.sweep.dir)
    assert re.fullmatch(rf"outputs/\d{{4}}-\d\d-\d\d/\d\d-\d\d-\d\d-{RUN_ID}", run_dir), run_dir
    assert sweep_dir.endswith(f"-{RUN_ID}") and re.fullmatch(r"[0-9a-f]{6}", RUN_ID)
    other = subprocess.run([sys.executable, "-c", "from embedlab.config import RUN_ID; print(RUN_ID)"], check=True,
                           capture_output=True, text=True, cwd=ROOT).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{6}", other) and other != RUN_ID


class WaitForFile(L.Callback):
    """Test only: the training process waits after its first step until `path` exists."""

    def __init__(self, path: str):
        self.path = Path(path)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        while trainer.global_step == 1 and not self.path.exists():
            time.sleep(0.1)


@pytest.mark.slow
def test_two_runs_started_at_once_in_one_folder_one_runs_the_other_stops(tmp_path, tiny_data_dir, tiny_model_dir):
    run_dir, go_on = tmp_path / "shared", tmp_path / "go on"
    arguments = train_arguments(*STSB, "trainer.max_epochs=2", "trainer.log_every_n_steps=1", run_dir=run_dir,
                                data_dir=tiny_data_dir, backbone=tiny_model_dir)
    waiting = ["+callbacks.wait._target_=test_user_mistakes.WaitForFile", f"+callbacks.wait.path={go_on}"]
    environment = {**os.environ, **OFFLINE,
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")]))}
    first = subprocess.Popen([sys.executable, "train.py", *arguments, *waiting], cwd=ROOT, env=environment,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        # The first run has claimed the folder once its lock names it; it then waits at its first step.
        while not (run_dir / ".lock").is_file() or not (run_dir / ".lock").read_text():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.2)
        second = subprocess.run([sys.executable, "train.py", *arguments], cwd=ROOT, env=environment,
                                capture_output=True, text=True, timeout=300, check=False)
    finally:
        go_on.touch()
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-3000:]
    assert_one_line_error(second, f"run folder {run_dir} is in use by another run (pid {first.pid} on ")
    # The first run's outputs are whole: each of its 12 steps logged once, its model and results saved.
    header, *rows = (run_dir / "csv" / "metrics.csv").read_text().splitlines()
    loss = header.split(",").index("train/loss")
    assert len([row for row in rows if row.split(",")[loss]]) == 12
    assert "test/stsb/spearman_cosine" in json.loads((run_dir / "results.json").read_text())
    SentenceEncoder.load(run_dir / "model")


# The model folder: a kill at any step of the save leaves one whole model, and the next save clears what it left.

OLD, NEW = {"config.json": "old", "weights": "old weights"}, {"config.json": "new", "weights": "new weights",
                                                              "tokenizer": "new"}


def folder_files(folder: Path) -> dict[str, str]:
    return {path.name: path.read_text() for path in folder.iterdir()} if folder.is_dir() else {}


def write_new_model(folder: Path) -> None:
    for name, text in NEW.items():
        (folder / name).write_text(text)
        if name == "weights" and os.environ.get("KILL_AT") == "write":
            os.kill(os.getpid(), signal.SIGKILL)


def killing(function, when: str):
    """`function`, with this process killed (-9) before or after it runs, when KILL_AT names `when`."""
    def wrapper(*args, **kwargs):
        if os.environ.get("KILL_AT") == f"before {when}":
            os.kill(os.getpid(), signal.SIGKILL)
        result = function(*args, **kwargs)
        if os.environ.get("KILL_AT") == f"after {when}":
            os.kill(os.getpid(), signal.SIGKILL)
        return result
    return wrapper


def save_in_a_child_killed_at(target: Path, kill_at: str, exchange: bool) -> None:
    pid = os.fork()
    if pid == 0:
        try:
            os.environ["KILL_AT"] = kill_at
            model_files._exchange = killing(model_files._exchange if exchange else lambda *paths: False, "exchange")
            replace, calls = os.replace, []

            def counted_replace(*args):
                calls.append(args)
                return killing(replace, f"rename {len(calls)}")(*args)

            model_files.os.replace = counted_replace
            model_files.shutil.rmtree = killing(model_files.shutil.rmtree, "cleanup")
            model_files.save_atomically(target, write_new_model)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"{kill_at}: the child was not killed"


@pytest.mark.parametrize("exchange, kill_at", [
    (True, "write"), (True, "before exchange"), (True, "after exchange"), (True, "before cleanup"),
    (False, "write"), (False, "before rename 1"), (False, "after rename 1"), (False, "after rename 2"),
    (False, "after rename 3"),
])
def test_a_kill_at_any_step_of_the_save_leaves_one_whole_model(tmp_path, exchange, kill_at):
    target = tmp_path / "model"
    target.mkdir()
    for name, text in OLD.items():
        (target / name).write_text(text)
    save_in_a_child_killed_at(target, kill_at, exchange)
    between_the_renames = not exchange and kill_at == "after rename 1"
    if not between_the_renames:
        assert folder_files(target) in (OLD, NEW), kill_at
    else:
        # Two renames leave a gap, with the old model set aside whole; the next run puts it back.
        assert not target.exists() and folder_files(tmp_path / ".model.old") == OLD
    model_files.recover_interrupted_save(target)
    assert folder_files(target) in (OLD, NEW)
    assert [path.name for path in tmp_path.iterdir()] == ["model"]
    model_files.save_atomically(target, write_new_model)
    assert folder_files(target) == NEW and [path.name for path in tmp_path.iterdir()] == ["model"]


def test_a_saved_model_is_readable_as_the_umask_allows(tmp_path, tiny_model_dir):
    encoder = SentenceEncoder.load(tiny_model_dir)
    for umask, folder_mode, file_mode in ((0o022, 0o755, 0o644), (0o027, 0o750, 0o640)):
        previous = os.umask(umask)
        try:
            target = encoder.save(tmp_path / f"model-{umask:o}")
        finally:
            os.umask(previous)
        paths = [target, *target.rglob("*")]
        assert {path.stat().st_mode & 0o777 for path in paths if path.is_dir()} == {folder_mode}
        # model.safetensors among them, which safetensors itself writes as 0600.
        assert {path.stat().st_mode & 0o777 for path in paths if path.is_file()} == {file_mode}


# 3. Tracebacks where one line is promised: models and checkpoints.

def not_a_model(tmp_path: Path, kind: str, request) -> tuple[Path, str]:
    folder = tmp_path / kind
    if kind == "run folder":
        finished = request.getfixturevalue("finished_run")
        return finished, f"model path '{finished}' holds no model: it is a run folder; its model is {finished}/model"
    folder.mkdir()
    if kind == "empty folder":
        return folder, f"model path '{folder}' holds no model: the folder is empty"
    if kind == "some folder":
        (folder / "notes.txt").write_text("not a model")
        return folder, f"model path '{folder}' holds no model: there is no config.json or modules.json in it"
    if kind == "config without model_type":
        (folder / "config.json").write_text('{"hidden_size": 32}')
        return folder, f"could not load the model at '{folder}': Unrecognized model in {folder}"
    (folder / "config.json").write_text('{"model_type": "bert"}')
    (folder / "modules.json").write_text("{not json")
    return folder, f"{folder}/modules.json is not a readable JSON file: Expecting property name"


@pytest.mark.parametrize("kind", ["empty folder", "some folder", "run folder", "config without model_type",
                                  "garbage modules.json"])
def test_a_folder_that_holds_no_model_is_one_line_in_train_and_evaluate(kind, here, request, tmp_path, capfd,
                                                                         monkeypatch, tiny_data_dir):
    path, expected = not_a_model(tmp_path, kind, request)
    assert_one_line_error(here(*STSB, run_dir=tmp_path / "train", backbone=str(path)), expected)
    evaluation = run_here(entry_point("evaluate")(evaluate),
                          ["evaluate.py", f"model_path={path}", "evaluation=stsb", f"paths.data_dir={tiny_data_dir}",
                           f"hydra.run.dir={tmp_path / 'evaluate'}"], capfd, monkeypatch)
    assert_one_line_error(evaluation, expected)


def test_evaluate_names_a_missing_model_path_as_a_model_path(tmp_path, capfd, monkeypatch, tiny_data_dir):
    result = run_here(entry_point("evaluate")(evaluate),
                      ["evaluate.py", "model_path=/nonexistent", "evaluation=stsb", f"paths.data_dir={tiny_data_dir}",
                       f"hydra.run.dir={tmp_path}"], capfd, monkeypatch)
    assert_one_line_error(result, "model path '/nonexistent' does not exist")
    assert "backbone" not in result.stderr


class RunsAShellCommand:
    def __reduce__(self):
        return os.system, (f"touch {MARKER}",)


@pytest.mark.parametrize("kind, expected", [
    ("garbage", "is not a PyTorch checkpoint (Unsupported operand 110)"),
    ("malicious", ("was refused: it names posix.system, which a load of weights and plain data, the only load "
                   "embedlab makes, never runs or builds")),
    ("weights only", "holds no model weights (no state_dict): not a Lightning checkpoint"),
])
def test_a_checkpoint_that_is_garbage_or_malicious_is_refused_in_one_line(kind, expected, here, tmp_path,
                                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    checkpoint = tmp_path / "given.ckpt"
    if kind == "garbage":
        checkpoint.write_bytes(b"not a checkpoint at all" * 40)
    elif kind == "malicious":
        torch.save({"state_dict": RunsAShellCommand(), "loops": {}}, checkpoint)
    else:
        torch.save({"weights": torch.zeros(2)}, checkpoint)
    result = here(*STSB, f"ckpt_path={checkpoint}", run_dir=tmp_path / "run")
    assert_one_line_error(result, f"checkpoint '{checkpoint}' {expected}")
    assert "weights_only" not in result.stderr + result.stdout
    assert not (tmp_path / MARKER).exists() and not (ROOT / MARKER).exists()


# 3. and 4. Config mistakes: one line naming the key, the value and what is allowed.

@pytest.mark.parametrize("overrides, expected", [
    (["optim.lr=abc"], "optim.lr must be a number above 0, got 'abc'"),
    (["optim.lr=-1"], "optim.lr must be a number above 0, got -1"),
    (["trainer.max_epochs=-1"], "trainer.max_epochs=-1 trains without end: set trainer.max_steps=N"),
    (["trainer.max_epochs=0"], "trainer.max_epochs must be at least 1 or -1 (no limit), got 0"),
    (["eval_every_n_steps=0"], "eval_every_n_steps must be at least 1, got 0"),
    (["data.max_rows=-1"], "data.max_rows must be at least 1 or null (all), got -1"),
    (["data.num_workers=-1"], "data.num_workers must be at least 0, got -1"),
    (["data.batch_size=2.5"], "data.batch_size must be a whole number of at least 1, got 2.5"),
    (["save_model=bestt"], "save_model must be one of final, best, got 'bestt'"),
    (["precision=33"], "precision must be one of auto, 64, 32, 16,"),
    (["trainer=ddp_cpu", "trainer.strategy=dpp"], "trainer.strategy must be one of auto, ddp,"),
    (["data=pairs"], "data.source.local.columns, data.source.local.path must be set (the config leaves them as ???)"),
    (["+optim.lrr=1e-5"], "optim.lrr is not a setting of the model's optimiser (did you mean optim.lr?)"),
    (["+trainer.max_step=3"], ("trainer.max_step is not a setting of lightning.pytorch.Trainer (did you mean "
                               "trainer.max_steps?)")),
    (["optim.lrr=1e-5"], "there is no key optim.lrr in the config (a typo?"),
    (["+trainer.enable_progress_bar=false"], "turn the progress display off with callbacks.progress=null instead"),
    (["data=stbs"], "Could not find 'data/stbs'; Available options in 'data': corpus, medquad, medquad_nli, nli, pairs,"),
    (["optim.lr=[1"], "optim.lr=[1: no viable alternative at input '[1'"),
])
def test_a_config_mistake_is_one_line_before_anything_loads(overrides, expected, here, tmp_path):
    # The backbone does not exist: the config must be refused before any model loads.
    result = here(*STSB, *overrides, run_dir=tmp_path / "run", backbone="/no/such/model")
    assert_one_line_error(result, expected)
    assert "Hydra" not in result.stderr and "HYDRA_FULL_ERROR" not in result.stderr


# 3. and 4. Data mistakes.

def table(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pairs.csv"
    path.write_text(text)
    return path


PAIRS = ("data=pairs", "loss=cosine", "data.source.local.columns={sentence1: s1, sentence2: s2, score: score}")
GOOD_ROWS = "".join(f"the man plays {i}.,a man plays {i}.,0.{i}\n" for i in range(1, 9))


@pytest.mark.parametrize("policy", ["error", "skip"])
def test_a_csv_field_over_the_size_limit_is_a_bad_row(policy, here, tmp_path):
    path = table(tmp_path, "s1,s2,score\n" + "x" * 140_000 + ",b,0.5\n" + GOOD_ROWS)
    result = here(*PAIRS, f"data.source.local.path={path}", f"data.on_bad_row={policy}", "data.batch_size=4",
                  run_dir=tmp_path / "run")
    if policy == "error":
        assert_one_line_error(result, f"{path}:2: field larger than field limit (131072) characters")
    else:
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"{path}: skipped 1 malformed rows of 9 (on_bad_row=skip)" in result.stdout


def test_an_unclosed_quote_is_a_bad_row_not_two_rows_merged(here, tmp_path):
    path = table(tmp_path, 's1,s2,score\n"the man plays.,a man plays.,0.5\nthe dog runs.,a dog "runs",0.2\n'
                 + GOOD_ROWS)
    result = here(*PAIRS, f"data.source.local.path={path}", run_dir=tmp_path / "run")
    assert_one_line_error(result, f"{path}:2: a quoted field runs on to line 3: an unclosed quote?")


def test_a_binary_file_under_skip_is_reported_without_a_logging_traceback(here, tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_bytes(bytes(range(256)) * 20)
    result = here(*PAIRS, f"data.source.local.path={path}", "data.on_bad_row=skip", run_dir=tmp_path / "run")
    assert_one_line_error(result, f"data 'pairs': no training rows in {path}")
    assert "Logging error" not in result.stderr and "skipped" in result.stdout


# 4. No silent no-ops.

def test_a_single_step_at_warmup_rate_zero_is_refused(here, tmp_path):
    # 8 rows in batches of 8: one step, the warm-up's first, at learning rate 0.
    result = here(*STSB, "data.max_rows=8", run_dir=tmp_path / "run")
    assert_one_line_error(result, "the run has 1 optimiser step, and it is the warm-up's first (optim.warmup_ratio=0.1)"
                                  ", at learning rate 0: the model would not change")


def test_fewer_rows_than_a_batch_and_steps_within_the_warmup_are_warned_of(here, tmp_path):
    result = here(*STSB, "data.max_rows=5", "trainer.max_epochs=3", "optim.warmup_ratio=1", run_dir=tmp_path / "run")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "data stsb: 5 training rows, fewer than one batch (data.batch_size=8)" in result.stdout
    assert "all 3 optimiser steps of the run fall within the warm-up (optim.warmup_ratio=1)" in result.stdout


def test_a_run_shorter_than_the_evaluation_interval_evaluates_and_keeps_its_best_checkpoint(here, tmp_path):
    run_dir = tmp_path / "run"
    result = here(*STSB, "trainer.max_steps=3", "eval_every_n_steps=100", "save_model=best", run_dir=run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(path.name for path in (run_dir / "checkpoints").iterdir()) == ["epoch=0-step=3.ckpt", "last.ckpt"]
    assert f"restored the best checkpoint {run_dir / 'checkpoints' / 'epoch=0-step=3.ckpt'}" in result.stdout
    # Quiet and true output: no advertisement, no deprecation of Lightning's own internals, and (stdout is no
    # terminal here) a progress line that counts to max_steps.
    output = result.stdout + result.stderr
    assert "💡" not in output and "litlogger" not in output and "LeafSpec" not in output
    assert re.search(r"epoch 0 step 3/3 \(100%\), [\d.]+ steps/s", result.stdout), result.stdout


def test_the_progress_bar_counts_to_max_steps():
    trainer = SimpleNamespace(num_training_batches=469, max_steps=30, max_epochs=1, current_epoch=0,
                              accumulate_grad_batches=1)
    assert batches_this_epoch(trainer) == 30
    bar = StepsProgressBar()
    bar._trainer = trainer
    assert bar.total_train_batches == 30
    # The second epoch of a 600-step run over 469 batches an epoch: the 131 left.
    assert batches_this_epoch(SimpleNamespace(**{**vars(trainer), "max_steps": 600, "current_epoch": 1})) == 131
    assert batches_this_epoch(SimpleNamespace(**{**vars(trainer), "max_steps": -1})) == 469
