import os

import pytest
import torch

if not torch.cuda.is_available():
    # The Triton attention kernel runs on CPU tensors under Triton's interpreter; the variable
    # must be set before the kernels are defined (cs336_basics.nn.flash_attention imports them
    # at first use). It touches nothing else: torch.compile on CPU generates C++.
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """The tests' models are tiny: one thread is fastest, and immune to a busy machine, where
    threads that wait on each other for every small op slow down by orders of magnitude."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
