"""Export a model to a serving graph: `python scripts/export.py model_path=<dir> format=onnx|openvino quantize=none|int8`.

The folder (conf/export.yaml `output`, by default in the Hydra run directory) serves sentence embeddings with the
pooling and normalisation inside the graph; `python scripts/evaluate.py model_path=<folder>` scores it.
"""

from embedlab.cli import entry_point
from embedlab.data.sources import sample_texts
from embedlab.modeling.export import export_encoder, needs_calibration


def export(cfg) -> None:
    calibration = cfg.calibration
    texts = (sample_texts(calibration.source, "calibration texts", calibration.texts, calibration.seed)
             if needs_calibration(cfg.format, cfg.quantize) else None)
    folder = export_encoder(cfg.model_path, cfg.output, cfg.format, cfg.quantize, cfg.opset, texts)
    print(f"exported {cfg.model_path} ({cfg.format}, quantize={cfg.quantize}) to {folder}")


main = entry_point("export")(export)

if __name__ == "__main__":
    main()
