"""Where training runs and in what precision, said out loud."""

import contextlib
import glob
import shutil
import warnings

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks cuda > mps > cpu, but stops with the reason when the machine has a GPU
    that torch cannot use (rather than train on the CPU without a word); a named device that
    is not available is a clear error."""
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        if not (cuda or mps) and (reason := unusable_gpu()):
            raise RuntimeError(reason)
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if (name == "cuda" and not cuda) or (name == "mps" and not mps):
        raise ValueError(
            f"training.device={name}, but this machine has no {name} device torch can use; "
            + (unusable_gpu() or "use auto or cpu")
        )
    return torch.device(name)


def unusable_gpu() -> str | None:
    """Why an NVIDIA GPU that this machine has cannot be used by this torch build (a driver
    older than the CUDA build `uv sync` installed is common on shared clusters), or None
    when torch can use it or there is none."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if torch.cuda.is_available():
            return None
    if not (glob.glob("/dev/nvidia[0-9]*") or shutil.which("nvidia-smi")):
        return None
    told = next((str(w.message) for w in caught if "CUDA" in str(w.message)), "")
    build = (
        f"torch {torch.__version__}, built for CUDA {torch.version.cuda or '(none: a CPU build)'}"
    )
    return (
        f"this machine has an NVIDIA GPU, but {build} cannot use it"
        + (f" ({told.strip().splitlines()[0]})" if told else "")
        + ". Install a torch build that matches the driver (README: 'A GPU that torch cannot "
        "use'), or pass --device cpu to train on the CPU on purpose."
    )


def describe(device: torch.device, autocast: str, attention: str) -> str:
    """`cuda:0 (NVIDIA H100, bf16 autocast, attention triton)`: what a run computes with."""
    parts = [torch.cuda.get_device_name(device)] if device.type == "cuda" else []
    parts += ["bf16 autocast" if uses_bf16(device, autocast) else "fp32", f"attention {attention}"]
    return f"{device} ({', '.join(parts)})"


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
