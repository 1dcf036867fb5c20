"""embedlab: train and evaluate text embedding models with Lightning and Hydra."""

__version__ = "0.1.0"
