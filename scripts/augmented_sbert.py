"""The Augmented SBERT pipeline in one command (the same as `python train.py experiment=augsbert_stsb`):

    python scripts/augmented_sbert.py experiment=augsbert_stsb paths.data_dir=../shared/data
"""

from embedlab.train import main

if __name__ == "__main__":
    main()
