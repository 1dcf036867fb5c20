"""Mine hard negatives for (anchor, positive) rows; the jsonl it writes trains with `data=pairs loss=mnr`.

    python scripts/mine_hard_negatives.py data=nli paths.data_dir=../shared/data output=nli_mined.jsonl
"""

from embedlab.cli import entry_point
from embedlab.recipes.mining import mine

main = entry_point("mine")(mine)

if __name__ == "__main__":
    main()
