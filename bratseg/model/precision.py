"""Which device and precision the network runs on: shared by training and inference."""

from __future__ import annotations

from pathlib import Path

import torch

from bratseg.errors import BratsegError


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX). Without it, bf16
    autocast is emulated and slower than fp32."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # private helpers: fall back to the kernel's view of the CPU
        try:
            flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
        return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """The precision ``auto`` stands for on ``device``: bf16 on a GPU or a CPU with native
    bf16, else fp32; ``bf16`` and ``fp32`` stand for themselves."""
    if precision != "auto":
        return precision
    return "bf16" if parse_device(device).type == "cuda" or cpu_has_bf16() else "fp32"


def parse_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch device; :class:`BratsegError` when it names none, or a GPU this
    machine does not have."""
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise BratsegError(f"device {device!r}: not a torch device (cpu, cuda or cuda:N)") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise BratsegError(f"device {device!r}: no CUDA GPU is available here")
    return parsed
