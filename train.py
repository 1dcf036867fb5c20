"""Train an embedding model: `python train.py loss=mnr trainer=ddp` (see the README for every option)."""

from embedlab.train import main

if __name__ == "__main__":
    main()
