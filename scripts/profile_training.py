"""Profile a training step: `python scripts/profile_training.py paths.data_dir=<dir> [profile.job=train_nli_mnr]`.

The benchmark's training job (conf/benchmark.yaml, `profile:`) split into matmuls, attention, other kernels,
optimiser, data and framework overhead, with the fraction of the matmul limit reached (embedlab.recipes.profiling).
"""

from embedlab.cli import entry_point
from embedlab.recipes.profiling import profile_training

main = entry_point("benchmark")(profile_training)

if __name__ == "__main__":
    main()
