"""Data-parallel training across processes launched by `torchrun`; the only module that
imports `torch.distributed`.

    uv run torchrun --standalone --nproc_per_node 4 script/train.py --config ...

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK (and MASTER_ADDR/PORT) for every process; without
them, or with WORLD_SIZE=1, training runs in this one process and every method here is a
no-op. The backend is NCCL when the processes train on CUDA devices, gloo on CPU.

What each rank does:
- takes its slice of the same global batch (`rows`): the batch of step s is drawn from
  `rng([seed, s])` on every rank, so one config means one run at any world size;
- reduces gradients through DistributedDataParallel (or shards parameters with FSDP2);
- agrees with the others, once per step, on whether to stop (a signal may reach one rank
  only, and time budgets must end on the same step everywhere), through a gloo group on the
  CPU so that no GPU work is waited for.
"""

import os
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.optim import Optimizer

# How long a collective may wait for a rank before it fails: long enough for a slow checkpoint
# save or validation on rank 0, short enough that a wedged job does not sit for the default 10+
# minutes. A rank that crashes is noticed much sooner (gloo sees its sockets close; torchrun
# stops the other workers).
TIMEOUT = timedelta(minutes=5)


def _whole_on_cpu():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def _parameter_names(model: nn.Module, optimizer: Optimizer) -> list[str]:
    """Names of the optimizer's parameters in its own order (the order of its state's keys)."""
    name_of = {id(p): n for n, p in model.named_parameters()}
    return [name_of[id(p)] for group in optimizer.param_groups for p in group["params"]]


def plain(t: Tensor) -> Tensor:
    """A tensor that FSDP returns as a DTensor (a gradient norm), as a whole ordinary tensor."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


class RankFailure(RuntimeError):
    """Another rank stopped answering (it crashed or was killed)."""


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    parallel: str = "ddp"
    _control: object = None  # a gloo process group for host-side agreement

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def rows(self, batch_size: int) -> slice:
        """The rows of a global batch of `batch_size` that this rank trains on."""
        per_rank = batch_size // self.world_size
        return slice(self.rank * per_rank, (self.rank + 1) * per_rank)

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The model as the training step calls it: DDP (gradients averaged over ranks in
        buckets while the backward runs), FSDP2 (parameters, gradients and optimizer state
        sharded), or the model itself in one process."""
        if not self.enabled:
            return model
        if self.parallel == "fsdp":
            from torch.distributed.fsdp import fully_shard

            for block in model.layers:
                fully_shard(block)
            return fully_shard(model)
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    @property
    def sharded(self) -> bool:
        return self.enabled and self.parallel == "fsdp"

    def no_sync(self, model: nn.Module, last_micro_batch: bool) -> AbstractContextManager:
        """Skip the gradient reduction on every micro-batch but the last of a step."""
        if not self.enabled:
            return nullcontext()
        if self.sharded:
            model.set_requires_gradient_sync(last_micro_batch)
            return nullcontext()
        return nullcontext() if last_micro_batch else model.no_sync()

    def checkpoint_state(self, model: nn.Module, optimizer: Optimizer) -> tuple[dict, dict]:
        """The whole model and optimizer state in the plain single-process format (the
        optimizer's keyed by parameter index), whatever the world size. Under FSDP this
        gathers the shards (every rank must call it); the result is complete on rank 0."""
        if not self.sharded:
            return model.state_dict(), optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_state, by_name = get_state_dict(model, optimizer, options=_whole_on_cpu())
        if not self.is_main:  # the gathered state lands on rank 0 only
            return model_state, by_name
        names = _parameter_names(model, optimizer)
        return model_state, {
            "state": {i: by_name["state"][n] for i, n in enumerate(names) if n in by_name["state"]},
            "param_groups": [
                {**group, "params": [names.index(n) for n in group["params"]]}
                for group in by_name["param_groups"]
            ],
        }

    def load_optimizer_state(self, model: nn.Module, optimizer: Optimizer, state: dict) -> None:
        """Restore `checkpoint_state`'s optimizer half (under FSDP, each rank keeps its shard)."""
        if not self.sharded:
            optimizer.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        names = _parameter_names(model, optimizer)
        by_name = {
            "state": {names[i]: v for i, v in state["state"].items()},
            "param_groups": [
                {**group, "params": [names[i] for i in group["params"]]}
                for group in state["param_groups"]
            ],
        }
        set_optimizer_state_dict(model, optimizer, by_name, options=_whole_on_cpu())

    def sum(self, t: Tensor) -> Tensor:
        """The sum of `t` over ranks (in place, returned)."""
        if self.enabled:
            self._guard(dist.all_reduce, t)
        return t

    def mean(self, t: Tensor) -> Tensor:
        return self.sum(t).div_(self.world_size) if self.enabled else t

    def agree(self, values: Sequence[float]) -> list[float]:
        """Each value's maximum over ranks (stop flags, elapsed time); through gloo, on the
        CPU, so it waits for no GPU work."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64)
        self._guard(dist.all_reduce, t, op=dist.ReduceOp.MAX, group=self._control)
        return t.tolist()

    def barrier(self) -> None:
        if self.enabled:
            self._guard(dist.barrier, group=self._control)

    def _guard(self, collective, *args, **kwargs) -> None:
        try:
            collective(*args, **kwargs)
        except RuntimeError as e:
            failure = self.peer_failure(e)
            if failure is None:
                raise
            raise failure from e

    def peer_failure(self, e: BaseException) -> "RankFailure | None":
        """A RankFailure for an error that means another rank is gone (a collective that
        lost its peer, in ours or in DDP's own reductions), else None."""
        text = str(e)
        lost = isinstance(e, dist.DistBackendError) or any(
            mark in text
            for mark in ("Connection closed by peer", "Connection reset by peer", "NCCL")
        )
        if not (self.enabled and lost):
            return None
        return RankFailure(
            f"rank {self.rank}: another rank stopped answering (it crashed, was killed, or "
            f"is stuck); stopping this one too. ({type(e).__name__}: {text.splitlines()[0]})"
        )

    def shutdown(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def launched_rank() -> int:
    """This process's rank as the launcher set it (0 when not launched by torchrun), known
    before the process group exists: for printing from one process only."""
    return int(os.environ.get("RANK", "0"))


def setup(device: torch.device, parallel: str = "ddp") -> tuple[Distributed, torch.device]:
    """Join the process group torchrun describes in the environment (if any) and pick this
    rank's device: `cuda:LOCAL_RANK` when training on CUDA. Returns (Distributed, device)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed(parallel=parallel), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA devices are "
                "visible: start at most one process per GPU (torchrun --nproc_per_node)"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", timeout=TIMEOUT, device_id=device)
        control = dist.new_group(backend="gloo", timeout=TIMEOUT)
    else:
        dist.init_process_group("gloo", timeout=TIMEOUT)
        control = None  # the default group is gloo already
    return Distributed(rank, world_size, local_rank, parallel, control), device
