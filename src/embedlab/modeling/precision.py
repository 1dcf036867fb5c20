"""Lightning's precision names for inference: autocast to a lower-precision dtype, or weights cast to one."""

import contextlib

import torch

from embedlab.errors import ConfigError

AUTOCAST_DTYPES = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
WEIGHT_DTYPES = {"32-true": torch.float32, "bf16-true": torch.bfloat16, "16-true": torch.float16}


def autocast_dtype(precision: str) -> torch.dtype | None:
    if precision not in AUTOCAST_DTYPES:
        raise ConfigError(f"precision must be one of {', '.join(AUTOCAST_DTYPES)}, got {precision!r}")
    return AUTOCAST_DTYPES[precision]


def autocast(precision: str, device: str | torch.device):
    """The autocast context for `precision` on `device` ("cpu", "cuda:0", ...); a no-op for 32-true."""
    dtype = autocast_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def weight_dtype(precision: str) -> torch.dtype:
    if precision not in WEIGHT_DTYPES:
        raise ConfigError(f"the weights' precision must be one of {', '.join(WEIGHT_DTYPES)}, got {precision!r}")
    return WEIGHT_DTYPES[precision]
