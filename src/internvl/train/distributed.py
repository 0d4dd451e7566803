"""Processes started by `torchrun`: the process group, DDP / FSDP2 wrapping, and collective helpers.

Launch: `torchrun --nproc_per_node N -m internvl.cli train sft RECIPE.yaml` (one process per GPU,
or per CPU slot with the gloo backend). Without torchrun (no WORLD_SIZE in the environment) everything
here degrades to single-process no-ops.

Strategies:
* `ddp`  — every rank holds the whole model; gradients are averaged (all-reduce) after backward.
* `fsdp` — FSDP2 (`torch.distributed.fsdp.fully_shard`): each ViT layer and each decoder layer is a
  shard group, the rest (embeddings, projector, head) forms the root group; parameters, gradients and
  optimiser state are sharded across ranks. Works on CUDA/NCCL and on CPU/gloo.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

import torch
import torch.distributed as dist
from torch import nn

if TYPE_CHECKING:
    from internvl.model.internvl import InternVL


@dataclass
class Distributed:
    """Where this process stands: rank among world_size, and the device it computes on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # setup() created the process group (and teardown() destroys it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over ranks, in place (float64 / int64 tensors keep counters exact). NCCL reduces on the GPU."""
        if self.active:
            on_device = tensor.to(self.device)
            dist.all_reduce(on_device, op=dist.ReduceOp.SUM)
            tensor.copy_(on_device)
        return tensor


def setup(device: str = "auto", backend: str = "", init_method: str = "env://", timeout_s: int = 1800) -> Distributed:
    """Join the process group described by torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, ...)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        chosen = torch.device("cuda", local_rank)
    else:
        chosen = torch.device(device)
    owns_group = False
    if world_size > 1 and not dist.is_initialized():
        backend = backend or ("nccl" if chosen.type == "cuda" else "gloo")
        dist.init_process_group(
            backend,
            init_method=init_method or "env://",
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
        owns_group = True
    return Distributed(rank=rank, world_size=world_size, local_rank=local_rank, device=chosen, owns_group=owns_group)


def teardown(state: Distributed) -> None:
    """Leave the process group if `setup` created it (a caller's own group is left alone)."""
    if state.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def wrap(
    objective: nn.Module, model: InternVL, strategy: str, state: Distributed, find_unused_parameters: bool = False
) -> nn.Module:
    """The module the training loop calls: `objective` itself, a DDP wrapper, or `objective` sharded in place."""
    if not state.active or strategy == "none":
        return objective
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [state.device.index] if state.device.type == "cuda" else None
        return DistributedDataParallel(objective, device_ids=device_ids, find_unused_parameters=find_unused_parameters)
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for layer in list(model.vision.layers) + list(model.language.layers):
            fully_shard(layer)
        fully_shard(objective)
        return objective
    raise ValueError(f"unknown distributed strategy {strategy!r}")


def unwrap(module: nn.Module) -> nn.Module:
    """The objective inside a DDP wrapper (FSDP2 shards in place, so it is its own inner module)."""
    return (
        module.module
        if hasattr(module, "module") and isinstance(module, nn.parallel.DistributedDataParallel)
        else module
    )


@contextlib.contextmanager
def gradient_sync(module: nn.Module, enabled: bool) -> Iterator[None]:
    """Skip the gradient all-reduce / reduce-scatter for micro-batches before the last of a step."""
    if enabled:
        yield
        return
    if isinstance(module, nn.parallel.DistributedDataParallel):
        with module.no_sync():
            yield
        return
    set_sync = getattr(module, "set_requires_gradient_sync", None)  # FSDP2
    if set_sync is not None:
        set_sync(False)
        try:
            yield
        finally:
            set_sync(True)
        return
    yield


def clip_grad_norm(parameters: list[nn.Parameter], max_norm: float) -> float:
    """Total gradient norm before clipping (over all ranks for sharded gradients); clip when max_norm > 0."""
    grads = [p for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    norm = torch.nn.utils.clip_grad_norm_(grads, max_norm if max_norm > 0 else float("inf"))
    if hasattr(norm, "full_tensor"):  # DTensor under FSDP2
        norm = norm.full_tensor()
    return float(norm)


# ----------------------------------------------------------------------------------------------
# State dicts with full (unsharded) tensors, keyed by parameter names, on every strategy


def _options(state: Distributed, **kwargs: Any):  # type: ignore[no-untyped-def]
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=state.active, **kwargs)


def model_state(module: nn.Module, state: Distributed) -> dict[str, torch.Tensor]:
    """Full parameter tensors (on CPU) keyed by name; collective; rank 0 gets them, other ranks `{}`
    when distributed."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    full = get_model_state_dict(unwrap(module), options=_options(state))
    return {k: v.detach().cpu() for k, v in full.items() if isinstance(v, torch.Tensor)}


def load_model_state(module: nn.Module, tensors: dict[str, torch.Tensor], state: Distributed) -> None:
    """Copy full tensors (every rank passes the same dict) into the possibly sharded module; keys may be a subset."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    set_model_state_dict(unwrap(module), dict[str, Any](tensors), options=_options(state, strict=False))


def optimizer_state(module: nn.Module, optimizer: torch.optim.Optimizer, state: Distributed) -> dict:
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(unwrap(module), optimizer, options=_options(state))


def load_optimizer_state(module: nn.Module, optimizer: torch.optim.Optimizer, saved: dict, state: Distributed) -> None:
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(unwrap(module), optimizer, saved, options=_options(state))
