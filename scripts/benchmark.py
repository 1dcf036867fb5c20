"""embedlab against sentence-transformers, side by side: `python scripts/benchmark.py paths.data_dir=<dir>`.

`suite=speed` (the default): the training and encoding jobs of conf/benchmark.yaml (embedlab.recipes.benchmark),
benchmark.json in the run directory. `suite=retrieval`: the retrieval recipes on MedQuAD
(embedlab.recipes.retrieval_benchmark), results.json in the run directory. Both print their table.
`resume=<run dir>` finishes an interrupted run in its folder, reusing the stages it finished.
"""

from omegaconf import DictConfig

from embedlab.cli import entry_point
from embedlab.recipes.benchmark import benchmark
from embedlab.recipes.retrieval_benchmark import benchmark_retrieval


def run(cfg: DictConfig) -> dict:
    return benchmark_retrieval(cfg) if cfg.suite.name == "retrieval" else benchmark(cfg)


main = entry_point("benchmark", resumes="stages")(run)

if __name__ == "__main__":
    main()
