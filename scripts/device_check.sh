#!/usr/bin/env bash
# The GPU check, at most 6 minutes on one GPU: the tests marked `gpu`, then the training and encoding benchmark
# against sentence-transformers on the GPU, each side in its best setting (bf16 for both), into one JSON file.
#
#   bash scripts/device_check.sh [--cpu-only]
#
# --cpu-only runs the same steps on the CPU at a tiny size (the gpu tests skip), as CI does to keep the script
# working. Environment: EMBEDLAB_DATA_DIR (default ../shared/data), EMBEDLAB_CHECK_MODEL (default the packaged
# all-MiniLM-L6-v2), EMBEDLAB_CHECK_OUT (default device_check.json).
# On a lent GPU machine only the checkout travels, not ../shared/data: copy the two folders the benchmark reads
# (stsbenchmark/, nli_ling_in_loop/, 23 MB) into a folder of the checkout that .git/info/exclude ignores, carry that
# folder with the call, and set EMBEDLAB_DATA_DIR to it.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=gpu
if [[ "${1:-}" == "--cpu-only" ]]; then mode=cpu; fi
data_dir=${EMBEDLAB_DATA_DIR:-../shared/data}
out=${EMBEDLAB_CHECK_OUT:-device_check.json}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
model=()
if [[ -n "${EMBEDLAB_CHECK_MODEL:-}" ]]; then model=("model_path=$EMBEDLAB_CHECK_MODEL"); fi

if [[ $mode == gpu ]]; then
  python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA GPU: use --cpu-only")'
  # Both sides in bf16: the project autocasts training and encodes with bf16 weights, compiled; the reference
  # autocasts both. The exports and the ONNX peers are CPU paths, left out here.
  settings=(device=cuda precision=bf16-mixed sentence_transformers.precision=bf16-mixed encode.precision=bf16-true
            encode.compile=true repeats=3)
  test_limit=150 bench_limit=180
else
  settings=(device=cpu threads=1 repeats=1 train.steps=2 train.warmup_steps=1 'jobs=[train_stsb_cosine,encode_bs32]'
            encode.precision=32-true encode.compile=false)
  test_limit=300 bench_limit=300
fi

tests_status=0
timeout "$test_limit" python -m pytest -q -m gpu tests -p no:cacheprovider --junitxml "$work/gpu_tests.xml" \
  || tests_status=$?
bench_status=0
timeout "$bench_limit" python scripts/benchmark.py "paths.data_dir=$data_dir" "${model[@]}" "${settings[@]}" \
  'encode.exports=[]' 'sentence_transformers.backends=[]' "hydra.run.dir=$work/benchmark" || bench_status=$?

python - "$work" "$out" "$mode" "$tests_status" "$bench_status" <<'PY'
import json, sys, xml.etree.ElementTree as ElementTree
from pathlib import Path

import torch

work, out, mode, tests_status, bench_status = Path(sys.argv[1]), sys.argv[2], sys.argv[3], *map(int, sys.argv[4:])
tests = {}
if (work / "gpu_tests.xml").exists():
    for case in ElementTree.parse(work / "gpu_tests.xml").iter("testcase"):
        outcome = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
        tests[f"{case.get('classname')}::{case.get('name')}"] = outcome
benchmark = work / "benchmark" / "benchmark.json"
report = {"mode": mode, "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
          "torch": torch.__version__, "tests_exit_status": tests_status, "tests": tests,
          "benchmark_exit_status": bench_status,
          "benchmark": json.loads(benchmark.read_text()) if benchmark.exists() else None}
Path(out).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
print(f"device check ({mode}): tests exit {tests_status}, benchmark exit {bench_status}; {out}")
sys.exit(1 if tests_status or bench_status else 0)
PY
