"""Evaluate a saved model: `python scripts/evaluate.py model_path=<dir> [evaluation=[sts,...]] paths.data_dir=<dir>`.

Suites (conf/evaluation/): sts, retrieval, classification, latency (the default: all four), mteb, beir, and the
training ones (stsb, liveqa_dev, ...). Writes into the Hydra run directory: results.json
("<split>/<dataset>/<metric>" keys), results.md, similarities.json and config.yaml.
"""

from embedlab.cli import entry_point
from embedlab.evaluation.job import evaluate

main = entry_point("evaluate")(evaluate)

if __name__ == "__main__":
    main()
