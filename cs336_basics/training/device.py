"""Where training runs and in what precision."""

import contextlib

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks cuda > mps > cpu; a named device that is not available is a clear error."""
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if (name == "cuda" and not cuda) or (name == "mps" and not mps):
        raise ValueError(
            f"training.device={name}, but this machine has no {name} device; use auto or cpu"
        )
    return torch.device(name)


def uses_bf16(device: torch.device, autocast: str = "auto") -> bool:
    """`auto` means bf16 autocast on CUDA (tensor cores) and full fp32 elsewhere."""
    return autocast == "bf16" or (autocast == "auto" and device.type == "cuda")


def autocast_context(
    device: torch.device, autocast: str = "auto"
) -> contextlib.AbstractContextManager:
    """bf16 autocast when `uses_bf16`, else a no-op; parameters and optimizer state stay fp32."""
    if uses_bf16(device, autocast):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def enable_tf32() -> None:
    """Let fp32 matmuls outside autocast use TF32 tensor cores (no-op off CUDA)."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
