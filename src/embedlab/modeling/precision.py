"""Lightning's precision names for inference: autocast to a lower-precision dtype, or weights cast to one; and
`auto`, which picks bf16 where the hardware computes it natively and fp32 elsewhere."""

import contextlib
import logging
from pathlib import Path

import torch

from embedlab.config_checks import AUTO_PRECISION
from embedlab.errors import ConfigError

log = logging.getLogger(__name__)
# What `auto` becomes where bf16 pays: autocast for training, weights cast once for inference.
AUTO_BF16 = {"training": "bf16-mixed", "inference": "bf16-true"}
# CPU instructions that compute bf16 natively; without them torch emulates bf16, slower than fp32.
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
# Ampere and later GPUs have bf16 tensor cores.
BF16_GPU_CAPABILITY = (8, 0)
CPU_INFO = Path("/proc/cpuinfo")

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


def resolve_precision(precision: str, device: str | torch.device, use: str = "training") -> str:
    """`precision` itself, or for `auto` bf16 (`AUTO_BF16[use]`) where `device` computes bf16 natively and 32-true
    elsewhere; the choice is logged in one line."""
    if precision != AUTO_PRECISION:
        return precision
    native, why = native_bf16(torch.device(device))
    chosen = AUTO_BF16[use] if native else "32-true"
    log.info("precision=auto: %s, as %s (precision=32-true for exact fp32, precision=%s to force bf16)", chosen, why,
             AUTO_BF16[use])
    return chosen


def native_bf16(device: torch.device) -> tuple[bool, str]:
    """Whether `device` computes bf16 natively, and why."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        name = torch.cuda.get_device_name(index)
        if torch.cuda.get_device_capability(index) >= BF16_GPU_CAPABILITY:
            return True, f"{name} has bf16 tensor cores"
        return False, f"{name} is older than Ampere (no bf16 tensor cores)"
    if device.type == "cpu":
        flags = cpu_flags()
        found = next((flag for flag in BF16_CPU_FLAGS if flag in flags), None)
        if found:
            return True, f"this CPU has {found}"
        return False, f"this CPU has neither {' nor '.join(BF16_CPU_FLAGS)}"
    return False, f"bf16 is not chosen automatically on {device.type}"


def cpu_flags() -> set[str]:
    """The instruction-set flags of this CPU (Linux); empty where /proc/cpuinfo is not there."""
    if not CPU_INFO.is_file():
        return set()
    for line in CPU_INFO.read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()
