"""Running the project's encoder in MTEB 2.x, on MTEB's own tasks (by name) or on a local STS file.

Importing this module needs `mteb` (the `eval` extra); nothing else in embedlab.evaluation imports it.
"""

from collections.abc import Sequence
from pathlib import Path

import mteb
import numpy as np
from datasets import Dataset, DatasetDict
from mteb import AbsTask, TaskMetadata
from mteb.abstasks.sts import AbsTaskSTS
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta, ScoringFunction
from mteb.types import PromptType

from embedlab.errors import ConfigError, DataError, first_line
from embedlab.evaluation.datasets import ScoredPairs
from embedlab.evaluation.encoding import TextEncoder


class MtebEncoder(AbsEncoder):
    """An MTEB encoder (`mteb.EncoderProtocol`) over any embedlab encoder.

    MTEB hands over a DataLoader of batches whose "text" column holds the texts; they are embedded together so
    the encoder can group similar lengths. MTEB's prompt type (query or document) names the encoder's prompt, so a
    model with query and document prompts is evaluated with them, as `encode_query`/`encode_document` would.
    """

    def __init__(self, encoder: TextEncoder, name: str = "embedlab/model", revision: str = "local",
                 embedding_dim: int | None = None):
        self.model = encoder
        self.mteb_model_meta = ModelMeta.create_empty({
            "name": name, "revision": revision, "embed_dim": embedding_dim or getattr(encoder, "embedding_dim", None),
            "similarity_fn_name": ScoringFunction.COSINE, "framework": ["PyTorch"], "modalities": ["text"],
        })

    def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kwargs) -> np.ndarray:
        texts = [text for batch in inputs for text in batch["text"]]
        batch_size = kwargs.get("batch_size") or inputs.batch_size or 32
        prompt = {"prompt_name": PromptType(prompt_type).value} if prompt_type is not None else {}
        return self.model.encode(texts, batch_size=batch_size, show_progress_bar=kwargs.get("show_progress_bar", True),
                                 **prompt).numpy()


class LocalSTSTask(AbsTaskSTS):
    """An MTEB STS task fed from pairs in memory (read from a local file), not from the hub; make one with
    `local_sts_task`. Gold scores may be on any scale: MTEB's correlations do not depend on it."""

    pairs: ScoredPairs

    def load_data(self, num_proc: int | None = None, **kwargs) -> None:
        if self.data_loaded:
            return
        split = self.metadata.eval_splits[0]
        self.dataset = DatasetDict({split: Dataset.from_dict(
            {"sentence1": self.pairs.sentence1, "sentence2": self.pairs.sentence2, "score": self.pairs.scores})})
        self.data_loaded = True


def local_sts_task(name: str, pairs: ScoredPairs, split: str = "test") -> LocalSTSTask:
    """A LocalSTSTask named `name`. MTEB reads a task's metadata from its class (it drops instance copies when it
    unloads data), so each local task gets a class of its own."""
    metadata = TaskMetadata(
        name=name,
        description=f"Local STS pairs ({len(pairs)}), scored by the Spearman correlation of the cosine.",
        dataset={"path": f"local/{name}", "revision": "local"},
        type="STS", category="t2t", modalities=["text"], eval_splits=[split], eval_langs=["eng-Latn"],
        main_score="cosine_spearman",
    )
    task_class = type(f"LocalSTSTask_{name}", (LocalSTSTask,), {"metadata": metadata, "pairs": pairs})
    return task_class()


class MtebEvaluator:
    """Runs MTEB tasks; keys "<split>/mteb-<task>/<main score>" for each evaluated split (and subset, as
    "mteb-<task>-<subset>").

    `tasks` holds MTEB task names (loaded from the hub by `mteb.get_tasks`) or task objects such as LocalSTSTask.
    `output_dir`, when set, keeps MTEB's own per-task result files there.
    """

    name = "mteb"
    main_metric = "main_score"

    def __init__(self, tasks: Sequence[str | AbsTask], batch_size: int = 32, model_name: str = "embedlab/model",
                 output_dir: str | None = None):
        if not tasks:
            raise ConfigError("evaluation=[mteb] needs at least one task: set evaluation.mteb.tasks=[STSBenchmark, ...]")
        self.tasks = list(tasks)
        self.batch_size = batch_size
        self.model_name = model_name
        self.output_dir = output_dir

    def __call__(self, encoder: TextEncoder) -> dict[str, float]:
        names = [task for task in self.tasks if isinstance(task, str)]
        tasks = [task for task in self.tasks if not isinstance(task, str)]
        if names:
            tasks += list(mteb.get_tasks(tasks=names))
        cache = mteb.ResultCache(cache_path=str(Path(self.output_dir).resolve())) if self.output_dir else None
        try:
            results = mteb.evaluate(MtebEncoder(encoder, name=self.model_name), tasks, cache=cache,
                                    encode_kwargs={"batch_size": self.batch_size}, overwrite_strategy="always")
        except OSError as error:  # the datasets library's ConnectionError among them
            raise DataError(f"MTEB could not load its task data: {first_line(error)}. Without the Hugging Face hub, "
                            "run the local suites or local tasks (local_sts_task).") from error
        main_scores = {task.metadata.name: task.metadata.main_score for task in tasks}
        metrics = {}
        for task_result in results.task_results:
            for split, subsets in task_result.scores.items():
                for subset in subsets:
                    suffix = "" if subset["hf_subset"] == "default" else f"-{subset['hf_subset']}"
                    key = f"{split}/mteb-{task_result.task_name}{suffix}/{main_scores[task_result.task_name]}"
                    metrics[key] = float(subset["main_score"])
        return metrics
