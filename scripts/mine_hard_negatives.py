"""Mine hard negatives for (anchor, positive) rows; the jsonl it writes trains with `data=pairs loss=mnr`.

    python scripts/mine_hard_negatives.py data=nli paths.data_dir=../shared/data output=nli_mined.jsonl
"""

import json
import logging
import sys
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from embedlab.config import CONF_DIR
from embedlab.cross_encoder import CrossEncoder
from embedlab.encoder import SentenceEncoder
from embedlab.errors import EmbedlabError
from embedlab.losses import MultipleNegativesRankingLoss
from embedlab.mining import MiningFilters, mine_hard_negatives

log = logging.getLogger("mine_hard_negatives")


def mine(cfg: DictConfig) -> Path:
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.fit_loss("mnr", MultipleNegativesRankingLoss)
    rows, origin = datamodule.load_train(datamodule.format)
    log.info("%d (anchor, positive) rows from %s", len(rows), origin)
    corpus = Path(cfg.corpus_path).read_text(encoding="utf-8").splitlines() if cfg.corpus_path else None
    cross_encoder = CrossEncoder.load(cfg.cross_encoder_path) if cfg.cross_encoder_path else None
    mined = mine_hard_negatives(SentenceEncoder.load(cfg.model_path), rows, MiningFilters(**cfg.filters),
                                corpus=corpus, cross_encoder=cross_encoder, batch_size=cfg.batch_size)
    output = Path(cfg.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in mined), encoding="utf-8")
    log.info("wrote %d rows to %s", len(mined), output)
    return output


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="mine")
def main(cfg: DictConfig) -> None:
    try:
        mine(cfg)
    except EmbedlabError as error:
        print(f"embedlab: error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
