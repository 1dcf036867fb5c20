"""sentence-transformers' ONNX and OpenVINO backends, for the benchmark's encode jobs, in their own environment.

Those backends go through optimum, whose current release does not import under transformers 5, so this script
runs in a separate virtual environment with `transformers<5` (README, "Speed and benchmarks", creates it). It
imports sentence-transformers only, never embedlab. The benchmark (embedlab.recipes.benchmark) starts it once per
encode job and talks to it in JSON lines: each request on stdin,
    {"backend": "onnx_int8", "texts": [...], "batch_size": 32, "output": "<file>.npy"}
is answered on stdout by one line starting with RESULT_MARKER: {"seconds": ...} (the time of `encode` alone, the
embeddings saved to `output`) or {"error": "..."} when that backend cannot be loaded here.

Backends: onnx (fp32, exported by optimum), onnx_o3 (optimum's O3 graph optimisation), onnx_int8 (dynamic int8
quantisation for this CPU's best instruction set), openvino (needs optimum-intel).
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

RESULT_MARKER = "@@result "
# optimum's dynamic quantisation configs, best first; the first this CPU has is used.
INT8_CONFIGS = [("avx512_vnni", "avx512_vnni"), ("avx512", "avx512f"), ("avx2", "avx2")]


def cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def session_options(threads: int | None):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return options


def load(backend: str, model_dir: Path, threads: int | None):
    from sentence_transformers import SentenceTransformer

    if backend == "openvino":
        config = {"INFERENCE_NUM_THREADS": threads} if threads else {}
        return SentenceTransformer(str(model_dir), backend="openvino", device="cpu",
                                   model_kwargs={"ov_config": config})
    onnx_kwargs = {"session_options": session_options(threads)}
    fp32 = SentenceTransformer(str(model_dir), backend="onnx", device="cpu", model_kwargs=onnx_kwargs)
    if backend == "onnx":
        return fp32
    if backend == "onnx_o3":
        from sentence_transformers import export_optimized_onnx_model

        export_optimized_onnx_model(fp32, "O3", str(model_dir))
        file_name = "onnx/model_O3.onnx"
    elif backend == "onnx_int8":
        from sentence_transformers import export_dynamic_quantized_onnx_model

        flags = cpu_flags()
        config = next(name for name, flag in INT8_CONFIGS if flag in flags)
        export_dynamic_quantized_onnx_model(fp32, config, str(model_dir))
        file_name = f"onnx/model_qint8_{config}.onnx"
    else:
        raise ValueError(f"unknown backend {backend!r}")
    return SentenceTransformer(str(model_dir), backend="onnx", device="cpu",
                               model_kwargs={**onnx_kwargs, "file_name": file_name})


def answer(reply: dict) -> None:
    print(RESULT_MARKER + json.dumps(reply), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a sentence-transformers model folder (copied, never written)")
    parser.add_argument("--work", required=True, help="a scratch folder for the copy and its exported graphs")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    model_dir = Path(args.work) / "model"
    if not model_dir.exists():
        shutil.copytree(args.model, model_dir)
    models = {}
    for line in sys.stdin:
        request = json.loads(line)
        backend = request["backend"]
        try:
            if backend not in models:
                models[backend] = load(backend, model_dir, args.threads)
        # sentence-transformers raises a bare Exception for a missing optional package; any failure to load is
        # reported to the benchmark, which skips this backend with a note.
        except Exception as error:  # noqa: BLE001
            answer({"error": f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300]}"})
            continue
        started = time.perf_counter()
        embeddings = models[backend].encode(request["texts"], batch_size=request["batch_size"])
        seconds = time.perf_counter() - started
        np.save(request["output"], np.asarray(embeddings, dtype=np.float32))
        answer({"seconds": seconds})
    return 0


if __name__ == "__main__":
    sys.exit(main())
