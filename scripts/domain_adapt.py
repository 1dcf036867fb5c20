"""The domain-adaptation pipeline in one command (the same as `python train.py experiment=tsdae_biomed`):

    python scripts/domain_adapt.py experiment=tsdae_biomed paths.data_dir=../shared/data
"""

from embedlab.train import main

if __name__ == "__main__":
    main()
