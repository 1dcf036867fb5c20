"""embedlab against sentence-transformers, side by side: `python scripts/benchmark.py paths.data_dir=<dir>`.

The jobs and their settings: conf/benchmark.yaml and embedlab.recipes.benchmark; the table is printed and
benchmark.json written into the Hydra run directory.
"""

from embedlab.cli import entry_point
from embedlab.recipes.benchmark import benchmark

main = entry_point("benchmark")(benchmark)

if __name__ == "__main__":
    main()
