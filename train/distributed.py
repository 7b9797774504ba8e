"""Where training runs: the device (``--device cpu|cuda|auto``) and, under ``torchrun``, the
data-parallel process group.

``torchrun --nproc_per_node N -m bnnhw.train ...`` (or ``torchrun --nproc_per_node N
$(which bnnhw) train ...``) starts N processes with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``
and the rendezvous address in their environment. Each process then trains the same model
(the same seed gives the same initial weights: :func:`check_same_parameters` makes sure) on
its shard of every epoch (``DistributedSampler``) with ``batch_size / N`` frames per step, and
``DistributedDataParallel`` averages the gradients, so a step sees ``batch_size`` frames as in
one process. The backend is gloo on CPUs, NCCL on GPUs (one GPU per process, ``cuda:LOCAL_RANK``).
Rank 0 alone writes checkpoints and the network file, and runs the export's self-check.
BatchNorm normalises each process's own part of the batch; its running statistics are rank 0's
(DistributedDataParallel broadcasts them before each forward pass).
"""

import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from bnnhw.errors import BnnhwError

__all__ = ["DEVICES", "DeviceError", "Context", "setup", "teardown", "check_same_parameters",
           "all_sum"]

DEVICES = ("auto", "cpu", "cuda")


class DeviceError(BnnhwError):
    """A device that is not there, or a launch that does not fit it."""


@dataclass(frozen=True)
class Context:
    """One training process: its rank among ``world`` processes and its device."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    why: str = ""                 # how the device was chosen, for the log line

    @property
    def parallel(self):
        return self.world > 1

    @property
    def backend(self):
        return "nccl" if self.device.type == "cuda" else "gloo"

    def describe(self):
        """``cpu (auto: no CUDA device), 2 processes (gloo)``: where the run trains."""
        where = str(self.device)
        if self.device.type == "cuda":
            where += f" ({torch.cuda.get_device_name(self.device)})"
        if self.why:
            where += f" ({self.why})"
        if self.parallel:
            where += f", {self.world} processes ({self.backend})"
        return where


def _device(option, local_rank):
    if option not in DEVICES:
        raise DeviceError(f"device {option!r} is not one of {', '.join(DEVICES)}")
    available = torch.cuda.is_available()
    if option == "cuda" and not available:
        raise DeviceError("device 'cuda': no CUDA device is available "
                          "(torch.cuda.is_available() is False); use --device cpu or auto")
    if option == "cpu" or (option == "auto" and not available):
        return torch.device("cpu"), ("auto: no CUDA device" if option == "auto" else "")
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise DeviceError(f"device 'cuda': local rank {local_rank} has no GPU of its own "
                          f"({count} found); start at most {count} processes per node")
    return torch.device("cuda", local_rank), ("auto: CUDA found" if option == "auto" else "")


def setup(option="auto"):
    """The :class:`Context` of this process, joining torchrun's process group if there is one
    (``WORLD_SIZE`` > 1 in the environment); ``option`` is ``--device``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device, why = _device(option, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        # Deterministic cuBLAS (torch.use_deterministic_algorithms refuses to run without).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    context = Context(rank=rank, world=world, local_rank=local_rank, device=device, why=why)
    if context.parallel and not dist.is_initialized():
        dist.init_process_group(backend=context.backend,
                                device_id=device if device.type == "cuda" else None)
    return context


def teardown(context):
    """Leave the process group (if this process joined one)."""
    if context.parallel and dist.is_initialized():
        dist.destroy_process_group()


def check_same_parameters(model, context):
    """Raise unless every process starts from the same weights (the same seed)."""
    if not context.parallel:
        return
    hasher = hashlib.sha256()
    for tensor in model.state_dict().values():
        hasher.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    mine = torch.tensor(list(hasher.digest()[:8]), dtype=torch.int64, device=context.device)
    low, high = mine.clone(), mine.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if not torch.equal(low, high):
        raise DeviceError("the processes start from different weights; give each the same "
                          "--seed")


def all_sum(values, context):
    """``values`` (numbers) summed over the processes, as floats."""
    if not context.parallel:
        return [float(v) for v in values]
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64,
                          device=context.device)
    dist.all_reduce(tensor)
    return tensor.tolist()
