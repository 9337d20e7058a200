"""The device choice is loud: a GPU that torch cannot use stops an `auto` run with the reason."""

import warnings

import pytest
import torch

from cs336_basics.training import device as device_module
from cs336_basics.training.device import describe, resolve_device, unusable_gpu

pytestmark = pytest.mark.filterwarnings("ignore:CUDA initialization")  # the faked driver's


def _driver_too_old(monkeypatch):
    def is_available():
        warnings.warn(
            "CUDA initialization: The NVIDIA driver on your system is too old (found version 11040).",
            stacklevel=2,
        )
        return False

    monkeypatch.setattr(torch.cuda, "is_available", is_available)
    monkeypatch.setattr(device_module.glob, "glob", lambda pattern: ["/dev/nvidia0"])


def test_a_gpu_torch_cannot_use_is_named_with_the_fix(monkeypatch):
    _driver_too_old(monkeypatch)
    reason = unusable_gpu()
    assert "has an NVIDIA GPU" in reason and "driver on your system is too old" in reason
    assert "README" in reason and "--device cpu" in reason
    with pytest.raises(RuntimeError, match="cannot use it"):
        resolve_device("auto")
    with pytest.raises(ValueError, match="too old"):
        resolve_device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")  # on purpose: allowed


def test_no_gpu_no_complaint(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_module.glob, "glob", lambda pattern: [])
    monkeypatch.setattr(device_module.shutil, "which", lambda name: None)
    assert unusable_gpu() is None
    assert describe(torch.device("cpu"), "auto", "scratch") == "cpu (fp32, attention scratch)"
