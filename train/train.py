"""Train a binarized MLP, export it to a network file and check it against the golden model.

``bnnhw train`` is :func:`run_from_args`; scripts call :func:`main_train` with a
:class:`Config`. A run is deterministic for a fixed seed and thread count: data order comes from
a generator seeded per epoch, everything else from ``torch.manual_seed(seed)``, and
``torch.use_deterministic_algorithms`` is on while training. Each epoch ends with a checkpoint,
so an interrupted run continues with ``resume=True`` (``--resume``) and ends with the same
network as an uninterrupted one.
"""

import argparse
import dataclasses
import json
import math
import os
import pickle
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import bnnhw
from bnnhw import artifact
from bnnhw.datasets import DatasetError, dataset_name, fingerprint, load_dataset
from bnnhw.errors import BnnhwError

from . import distributed
from . import export as export_
from .model import (PRESETS, SCALINGS, BinaryNet, LayerSpecError, format_layers,
                    parse_layers)

__all__ = [
    "Config", "ConfigError", "SCHEDULES", "PRESET_DEFAULTS",
    "build_model", "train", "main_train", "summary", "add_arguments", "config_from_args",
    "run_from_args",
]

SCHEDULES = ("cosine", "step", "constant")
# Per-preset defaults used where a Config field is None.
PRESET_DEFAULTS = {
    "digits": {"epochs": 60, "batch_size": 32},
    "tfc": {"epochs": 30, "batch_size": 100},
    "sfc": {"epochs": 30, "batch_size": 100},
    "lfc": {"epochs": 30, "batch_size": 100},
    "digits_cnn": {"epochs": 60, "batch_size": 32},
    "mnist_cnn": {"epochs": 30, "batch_size": 100},
    "cnv": {"epochs": 50, "batch_size": 100},
}
_CHECKPOINT_FORMAT = "bnnhw-train-checkpoint"


class ConfigError(BnnhwError):
    """A training option, or a checkpoint to resume from, is not usable."""


@dataclass
class Config:
    """Everything that decides a training run; recorded in the network file's provenance."""
    dataset: str = "digits"       # "digits" (bundled 8x8, 5-bit pixels) or an MNIST IDX folder
    model: str = None             # preset (train/model.py PRESETS); None: digits for the digits
                                  # dataset, cnv for CIFAR-10, sfc otherwise
    hidden: tuple = None          # MLP hidden sizes, overriding the preset's, e.g. (256, 256)
    layers: str = None            # layer specification overriding the preset's, e.g.
                                  # "conv:16:3,pool:2,dense:64" (train/model.py parse_layers)
    scaling: str = "none"         # weight scaling: "none" or "alpha" (XNOR-Net mean|W| per row)
    weight_bases: int = 1         # ABC-Net: M binary weight bases per layer (train/abc.py)
    act_bases: int = 1            # ABC-Net: N binary activation bases per hidden layer
    fraction_bits: int = 4        # ABC-Net: coefficients alpha_m beta_n as integers 1..2**f
    quantize_epochs: int = None   # ABC-Net: the last epochs train with the integer coefficients
                                  # (None: a sixth of the epochs, at least one)
    epochs: int = None            # binarized epochs (after real_epochs); None: the preset's
    real_epochs: int = 0          # two-step training: real-valued epochs first (0: one step)
    batch_size: int = None        # frames per optimiser step; None: the preset's
    lr: float = 1e-2              # Adam's initial learning rate (latent weights live in [-1, 1])
    lr_min: float = 1e-5          # learning rate reached at the end of each step's schedule
    schedule: str = "cosine"      # "cosine" (to lr_min), "step" (x0.1 at 50% and 75%), "constant"
    dropout: float = 0.0          # dropout before the hidden and output layers, training only
    shift: int = 0                # augmentation: move each training image by up to this many
                                  # pixels in x and y (zero fill), a fresh draw per step
    seed: int = 0                 # seeds weights, dropout and the per-epoch data order
    threads: int = 2              # torch CPU threads per process (results depend on it, bit
                                  # for bit; under torchrun, cores / processes)
    device: str = "auto"          # "cpu", "cuda" or "auto" (CUDA when there is a GPU); not in
                                  # the recorded fields: the provenance says what was used
    processes: int = 1            # data-parallel processes: torchrun's WORLD_SIZE, set by
                                  # train() (the global batch is split among them)
    checkpoint_dir: str = None    # per-epoch checkpoints; None: OUTPUT.ckpt/, removed on success
    resume: bool = False          # continue from the checkpoint in checkpoint_dir
    output: str = "network.npz"   # the network file to write
    progress: bool = True         # show a progress bar on stderr

    def resolved(self):
        """Return a copy with every None default filled in and every field checked."""
        c = dataclasses.replace(self)
        if c.model is None:
            c.model = ("digits" if c.dataset in (None, "digits")
                       else "cnv" if _holds_cifar(c.dataset) else "sfc")
        if c.model not in PRESETS:
            raise ConfigError(f"model {c.model!r} is not one of {', '.join(PRESETS)}")
        if c.hidden is not None and c.layers is not None:
            try:        # a resolved config has both, saying the same
                same = parse_layers(c.layers) == tuple(("dense", h) for h in c.hidden)
            except (LayerSpecError, TypeError):
                same = False
            if not same:
                raise ConfigError("hidden and layers both describe the layers; give one")
            c.hidden = None
        if c.hidden is not None:
            c.hidden = tuple(c.hidden)
            if not c.hidden:
                raise ConfigError("hidden must name at least one layer size")
            for n, h in enumerate(c.hidden):
                if not isinstance(h, int) or isinstance(h, bool) or h < 1:
                    raise ConfigError(f"hidden[{n}] must be a positive integer, not {h!r}")
            layers = tuple(("dense", h) for h in c.hidden)
        else:
            try:
                layers = parse_layers(c.layers if c.layers is not None else PRESETS[c.model])
            except LayerSpecError as error:
                raise ConfigError(f"layers: {error}") from None
        c.layers = format_layers(layers)
        c.hidden = (tuple(n for _, n in layers) if all(k == "dense" for k, *_ in layers)
                    else None)
        for name, value in PRESET_DEFAULTS[c.model].items():
            if getattr(c, name) is None:
                setattr(c, name, value)
        positive = {"epochs": c.epochs, "batch_size": c.batch_size, "threads": c.threads,
                    "processes": c.processes}
        for name, value in positive.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, not {value!r}")
        if not isinstance(c.real_epochs, int) or c.real_epochs < 0:
            raise ConfigError(f"real_epochs must be a non-negative integer, "
                              f"not {c.real_epochs!r}")
        if c.batch_size < 2:
            raise ConfigError(f"batch_size must be at least 2 for BatchNorm, not {c.batch_size}")
        if c.batch_size % c.processes or c.batch_size // c.processes < 2:
            raise ConfigError(f"batch_size {c.batch_size} must split into {c.processes} "
                              f"processes' batches of at least 2 frames each")
        if c.device not in distributed.DEVICES:
            raise ConfigError(f"device {c.device!r} is not one of "
                              f"{', '.join(distributed.DEVICES)}")
        if not (isinstance(c.lr, (int, float)) and c.lr > 0 and math.isfinite(c.lr)):
            raise ConfigError(f"lr must be a positive number, not {c.lr!r}")
        if not (isinstance(c.lr_min, (int, float)) and 0 <= c.lr_min <= c.lr):
            raise ConfigError(f"lr_min must be in 0..lr ({c.lr}), not {c.lr_min!r}")
        if c.schedule not in SCHEDULES:
            raise ConfigError(f"schedule {c.schedule!r} is not one of {', '.join(SCHEDULES)}")
        if c.scaling not in SCALINGS:
            raise ConfigError(f"scaling {c.scaling!r} is not one of {', '.join(SCALINGS)}")
        if not isinstance(c.shift, int) or isinstance(c.shift, bool) or c.shift < 0:
            raise ConfigError(f"shift must be a non-negative number of pixels, not {c.shift!r}")
        if not (isinstance(c.dropout, (int, float)) and 0 <= c.dropout < 1):
            raise ConfigError(f"dropout must be a probability with 0 <= P < 1, not {c.dropout!r}")
        for name, top in (("weight_bases", 16), ("act_bases", 8), ("fraction_bits", 12)):
            value = getattr(c, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= top:
                raise ConfigError(f"{name} must be an integer in 1..{top}, not {value!r}")
        if c.multibase:
            if c.real_epochs:
                raise ConfigError(f"real_epochs must be 0 with multi-base layers, "
                                  f"not {c.real_epochs}")
            if c.scaling != "none":
                raise ConfigError(f"scaling must be 'none' with multi-base layers (their "
                                  f"alphas are fitted), not {c.scaling!r}")
            if c.quantize_epochs is None:
                c.quantize_epochs = max(1, round(c.epochs / 6))
            if (not isinstance(c.quantize_epochs, int) or isinstance(c.quantize_epochs, bool)
                    or not 1 <= c.quantize_epochs <= c.epochs):
                raise ConfigError(f"quantize_epochs must be an integer in 1..{c.epochs} "
                                  f"(the epochs), not {c.quantize_epochs!r}")
        return c

    @property
    def multibase(self):
        """Whether the run trains ABC-Net layers (more than one weight or activation base)."""
        return self.weight_bases > 1 or self.act_bases > 1

    def checkpoint_path(self):
        """Return where this run's checkpoint lives."""
        folder = (Path(self.checkpoint_dir) if self.checkpoint_dir is not None
                  else Path(f"{self.output}.ckpt"))
        return folder / "checkpoint.pt"

    def training_fields(self):
        """Return the fields that decide the trained weights, as JSON-friendly values.

        ``dataset`` is reduced to the dataset's name (no path of this machine); its files are
        told apart by :func:`~bnnhw.datasets.fingerprint`, recorded beside these fields.
        """
        skip = {"checkpoint_dir", "resume", "output", "progress", "device"}
        if self.processes == 1:           # one-process runs are recorded as before
            skip.add("processes")
        if not self.multibase:            # single-base runs are recorded as before
            skip |= {"weight_bases", "act_bases", "fraction_bits", "quantize_epochs"}
        fields = {k: (list(v) if isinstance(v, tuple) else v)
                  for k, v in dataclasses.asdict(self).items() if k not in skip}
        fields["dataset"] = dataset_name(self.dataset)
        return fields


def _holds_cifar(spec):
    from bnnhw.datasets import CIFAR_TEST
    return Path(spec, CIFAR_TEST).is_file()


def build_model(config, dataset):
    """Return a fresh :class:`BinaryNet` (an :class:`~.abc.ABCNet` for multi-base runs) for a
    resolved `config` and a loaded `dataset`."""
    if config.multibase:
        from .abc import ABCNet
        try:
            return ABCNet(dataset.shape, dataset.in_bits, config.layers, dataset.classes,
                          weight_bases=config.weight_bases, act_bases=config.act_bases,
                          fraction_bits=config.fraction_bits, dropout=config.dropout)
        except LayerSpecError as error:
            raise ConfigError(f"layers {config.layers!r} on {dataset.name} "
                              f"({'x'.join(map(str, dataset.shape))}): {error}") from None
    try:
        return BinaryNet(dataset.shape, dataset.in_bits, config.layers, dataset.classes,
                         scaling=config.scaling, dropout=config.dropout)
    except LayerSpecError as error:
        raise ConfigError(f"layers {config.layers!r} on {dataset.name} "
                          f"({'x'.join(map(str, dataset.shape))}): {error}") from None


def _lr(config, epoch):
    """Learning rate of `epoch` (0-based): each step (real, binary) has its own schedule."""
    if epoch < config.real_epochs:
        position, length = epoch, config.real_epochs
    else:
        position, length = epoch - config.real_epochs, config.epochs
    if config.schedule == "constant":
        return config.lr
    if config.schedule == "step":
        return config.lr * (0.1 ** ((position >= length / 2) + (position >= 3 * length / 4)))
    cosine = 0.5 * (1 + math.cos(math.pi * position / max(length - 1, 1)))
    return config.lr_min + (config.lr - config.lr_min) * cosine


@contextmanager
def _torch_settings(threads):
    """Set thread count and deterministic algorithms for the block, then restore them."""
    old_threads = torch.get_num_threads()
    old_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_deterministic)


def _evaluate(model, x, y, batch=4096):
    """Torch eval-mode accuracy on float inputs `x` and labels `y` (on the model's device)."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(x), batch):
            scores = model(x[start:start + batch])
            correct += int((scores.argmax(dim=1) == y[start:start + batch]).sum())
    return correct / max(len(x), 1)


def _save_checkpoint(path, state):
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)


def _load_checkpoint(path, config, dataset, device="cpu"):
    """Return the checkpoint at `path` if it was written for `config` and `dataset` (its
    :func:`~bnnhw.datasets.fingerprint`); raise ConfigError otherwise."""
    if not path.is_file():
        raise ConfigError(f"resume: no checkpoint at {path}")
    try:
        state = torch.load(path, weights_only=True, map_location=device)
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as error:
        raise ConfigError(f"{path}: not a readable checkpoint ({error})") from None
    if not isinstance(state, dict) or state.get("format") != _CHECKPOINT_FORMAT:
        raise ConfigError(f"{path}: not a bnnhw training checkpoint")
    saved, wanted = state["config"], config.training_fields()
    for key in sorted(set(saved) | set(wanted)):
        if saved.get(key) != wanted.get(key):
            raise ConfigError(f"{path}: checkpoint has {key}={saved.get(key)!r}, this run "
                              f"{key}={wanted.get(key)!r}; rerun without --resume to start over")
    saved, wanted = (state.get("dataset") or {}).get("sha256"), dataset["sha256"]
    if saved != wanted:
        raise ConfigError(f"{path}: checkpoint has dataset sha256={saved!r}, this run "
                          f"sha256={wanted!r}; rerun without --resume to start over")
    return state


def train(config, dataset=None, *, log=None, context=None):
    """Train a model for `config` and return ``(model, history)``.

    `dataset` defaults to ``load_dataset(config.dataset)``. `history` lists one dict per epoch
    (``epoch``, ``binary``, ``lr``, ``loss``, ``train_accuracy``, ``test_accuracy``: torch
    eval-mode accuracy; ``seconds``: wall time of the epoch including that evaluation;
    ``resumed``: True on the epochs read from the checkpoint of an interrupted run). Writes
    a checkpoint after each epoch to ``config.checkpoint_path()``; with ``config.resume``,
    starts from it. The model is returned in eval mode, binarized, on the CPU.

    `context` (:func:`~.distributed.setup`, by default this process's, from ``config.device``
    and torchrun's environment) says where to train: under torchrun every process trains its
    shard of the data with DistributedDataParallel; only rank 0 evaluates, logs and writes
    the checkpoint, and only its `history` is filled.
    """
    config = config.resolved()
    if context is None:
        context = distributed.setup(config.device)
    config = dataclasses.replace(config, processes=context.world).resolved()
    if dataset is None:
        dataset = load_dataset(config.dataset)
    lead = context.rank == 0
    if lead:
        (log or (lambda text: print(text, file=sys.stderr, flush=True)))(
            f"train: {context.describe()}")
    device = context.device
    checkpoint = config.checkpoint_path()
    total = config.real_epochs + config.epochs
    with _torch_settings(config.threads):
        torch.manual_seed(config.seed)
        model = build_model(config, dataset).to(device)
        distributed.check_same_parameters(model, context)
        train_x = torch.from_numpy(dataset.train_x.astype(np.float32)).to(device)
        train_y = torch.from_numpy(dataset.train_y.astype(np.int64)).to(device)
        test_x = torch.from_numpy(dataset.test_x.astype(np.float32)).to(device)
        test_y = torch.from_numpy(dataset.test_y.astype(np.int64)).to(device)
        start, history = 0, []
        identity = fingerprint(dataset)
        state = (_load_checkpoint(checkpoint, config, identity, device) if config.resume
                 else None)
        if state is not None:
            # Epochs of an earlier process are marked, so its time is counted once.
            start = state["epoch"]
            history = [dict(r, resumed=True) for r in state["history"]]
        model.binary = start >= config.real_epochs
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["rng"].cpu())
        # The module the steps run: DistributedDataParallel averages the processes' gradients.
        runner = model
        if context.parallel:
            from torch.nn.parallel import DistributedDataParallel
            runner = DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        steps = len(train_x) // config.batch_size
        bar = _progress(config, total * steps, start * steps) if lead else None
        try:
            for epoch in range(start, total):
                if epoch == config.real_epochs and config.real_epochs:
                    # Step two: binarize and fine-tune with a fresh optimiser.
                    model.binary = True
                    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
                if config.multibase:
                    # The last epochs train with the integer coefficients that are exported.
                    model.quantized = epoch >= total - config.quantize_epochs
                began = time.monotonic()
                record = _epoch(model, optimizer, config, epoch, train_x, train_y,
                                dataset.shape, bar, context=context, runner=runner)
                if not lead:
                    continue
                record["test_accuracy"] = _evaluate(model, test_x, test_y)
                record["seconds"] = time.monotonic() - began
                history.append(record)
                _save_checkpoint(checkpoint, {
                    "format": _CHECKPOINT_FORMAT, "config": config.training_fields(),
                    "dataset": identity,
                    "epoch": epoch + 1, "history": history, "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state()})
                _report(bar, log, record, total)
        finally:
            if bar is not None:
                bar.close()
        model.binary = True
        if config.multibase:
            model.quantized = True
        model.eval()
    return model.cpu(), history


def _shifted(x, shape, limit, generator):
    """Images ``x`` (``(B, pixels)`` in stream order, of ``shape`` (C, H, W)) each moved by a
    random offset in ``-limit..limit`` rows and columns, the uncovered pixels 0."""
    c, h, w = shape
    images = x.reshape(len(x), h, w, c)
    out = torch.zeros_like(images)
    offsets = torch.randint(-limit, limit + 1, (len(x), 2), generator=generator)
    for (dy, dx) in offsets.unique(dim=0).tolist():
        rows = ((offsets[:, 0] == dy) & (offsets[:, 1] == dx)).nonzero().flatten()
        src = images[rows, max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
        out[rows, max(0, dy):h - max(0, -dy), max(0, dx):w - max(0, -dx)] = src
    return out.reshape(len(x), -1)


def _epoch(model, optimizer, config, epoch, x, y, shape, bar=None, *, context=None,
           runner=None):
    """Run one epoch of training; return its record (without the test accuracy).

    In one process, the data order is a permutation drawn from ``(seed, epoch)``; under
    torchrun (``context.parallel``), each process takes its shard of the epoch from a
    ``DistributedSampler`` seeded the same way and steps ``runner`` (the model wrapped in
    DistributedDataParallel) on ``batch_size / processes`` frames at a time. The loss and
    accuracy of the record are over every process's frames."""
    runner = model if runner is None else runner
    parallel = context is not None and context.parallel
    lr = _lr(config, epoch)
    for group in optimizer.param_groups:
        group["lr"] = lr
    model.train()
    # The data order depends only on (seed, epoch), so a resumed run sees the same batches.
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    if parallel:
        from torch.utils.data import DistributedSampler
        sampler = DistributedSampler(range(len(x)), num_replicas=context.world,
                                     rank=context.rank, shuffle=True, seed=config.seed,
                                     drop_last=True)
        sampler.set_epoch(epoch)
        order = torch.tensor(list(sampler), dtype=torch.int64)
        # Each process shifts its own images: a generator of its own.
        generator.manual_seed(config.seed * 1_000_003 + epoch + 7_919 * context.rank)
        batch_size = config.batch_size // context.world
    else:
        order = torch.randperm(len(x), generator=generator)
        batch_size = config.batch_size
    steps = len(order) // batch_size     # drop the last partial batch (BatchNorm needs 2+)
    loss_sum, correct, seen = 0.0, 0, 0
    for step in range(steps):
        index = order[step * batch_size:(step + 1) * batch_size].to(x.device)
        batch = x[index]
        if config.shift:
            batch = _shifted(batch, shape, config.shift, generator)
        logits = runner(batch)
        loss = F.cross_entropy(logits, y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        model.clip_weights()
        loss_sum += float(loss.detach()) * len(index)
        correct += int((logits.detach().argmax(dim=1) == y[index]).sum())
        seen += len(index)
        if bar is not None:             # progress within the epoch, a step at a time
            bar.update(1)
    if parallel:
        loss_sum, correct, seen = distributed.all_sum([loss_sum, correct, seen], context)
    return {"epoch": epoch + 1, "binary": model.binary, "lr": lr,
            "loss": loss_sum / max(seen, 1), "train_accuracy": correct / max(seen, 1)}


def _progress(config, total, start):
    if not config.progress:
        return None
    from tqdm import tqdm                    # only when a bar is wanted
    return tqdm(total=total, initial=start, desc="train", unit="step", file=sys.stderr,
                dynamic_ncols=True)


def _report(bar, log, record, total):
    text = (f"epoch {record['epoch']}/{total}{'' if record['binary'] else ' (real)'} "
            f"loss {record['loss']:.4f} train {100 * record['train_accuracy']:.2f}% "
            f"test {100 * record['test_accuracy']:.2f}%")
    if bar is not None:
        bar.set_postfix(refresh=False, loss=f"{record['loss']:.4f}",
                        train=f"{100 * record['train_accuracy']:.2f}%",
                        test=f"{100 * record['test_accuracy']:.2f}%",
                        epoch=f"{record['epoch']}/{total}")
    if log is not None:
        log(text)


def _git_revision():
    """Return the git commit of the source tree bnnhw runs from, or None."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=True,
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no"], check=True, capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "")


def main_train(config, *, log=None):
    """Train, export, self-check and write ``config.output``; return its :class:`Path`.

    The network file's provenance records the dataset (its name and SHA-256 digests, from
    :func:`~bnnhw.datasets.fingerprint`), the resolved config, the golden model's and torch's
    test accuracy, the self-check report (:func:`export.self_check`), the per-epoch history,
    the training time, and the bnnhw, torch and git versions. Raises
    :class:`ConfigError`, :class:`~bnnhw.datasets.DatasetError` or
    :class:`~bnnhw.train.export.SelfCheckError` (nothing is written then). The checkpoint is
    removed on success when ``checkpoint_dir`` was left at None.

    Under torchrun, every process trains (:func:`train`); rank 0 alone exports, checks and
    writes the file, the others return None.
    """
    config = config.resolved()
    output = Path(config.output)
    if output.is_dir():
        raise ConfigError(f"output {output} is a directory, not a file name")
    if not output.parent.is_dir():
        raise ConfigError(f"output {output}: no such directory {output.parent}")
    try:                                    # before training, not after: fail in seconds
        with tempfile.TemporaryFile(dir=output.parent):
            pass
    except OSError as error:
        raise ConfigError(f"output {output}: cannot write in {output.parent} "
                          f"({error.strerror})") from None
    dataset = load_dataset(config.dataset)
    context = distributed.setup(config.device)
    try:
        started = time.monotonic()
        model, history = train(config, dataset, log=log, context=context)
        seconds = time.monotonic() - started
    finally:
        distributed.teardown(context)
    if context.rank != 0:
        return None
    config = dataclasses.replace(config, processes=context.world)
    with _torch_settings(config.threads):
        if config.multibase:
            from .abc import export_abc
            net = export_abc(model, input_shape=dataset.shape,
                             labels=[str(c) for c in range(dataset.classes)])
        else:
            net = export_.export(model, input_shape=dataset.shape,
                                 labels=[str(c) for c in range(dataset.classes)])
        report = export_.self_check(model, net, dataset.test_x, dataset.test_y)
    provenance = {
        # The dataset by name and SHA-256 digests, never by a path of this machine.
        "dataset": {**fingerprint(dataset), "train_frames": int(len(dataset.train_y)),
                    "test_frames": int(len(dataset.test_y)), "in_bits": dataset.in_bits},
        "training": config.training_fields(),
        "golden_test_accuracy": report["golden_accuracy"],
        "torch_test_accuracy": report["torch_accuracy"],
        "self_check": report,
        "history": [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()}
                    for r in history],
        # Wall time of this process plus the epochs an interrupted one trained before it.
        "train_seconds": round(seconds + sum(r["seconds"] for r in history
                                             if r.get("resumed")), 2),
        "device": str(context.device),
        "processes": context.world,
        "bnnhw_version": bnnhw.__version__,
        "torch_version": torch.__version__,
        "git_revision": _git_revision(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    net = dataclasses.replace(net, provenance=json.loads(json.dumps(provenance)))
    artifact.save(net, output)
    if config.checkpoint_dir is None:
        checkpoint = config.checkpoint_path()
        checkpoint.unlink(missing_ok=True)
        try:
            checkpoint.parent.rmdir()
        except OSError:
            pass                             # not empty: someone else's files stay
    return output


def add_arguments(parser):
    """Add the ``bnnhw train`` options to an :class:`argparse.ArgumentParser`."""
    d = Config()
    parser.add_argument("-o", "--output", metavar="FILE", required=True,
                        help="network file to write")
    parser.add_argument("--dataset", metavar="DATASET", default=d.dataset,
                        help="'digits' (bundled 8x8) or a directory of MNIST-style IDX files "
                             "(default: %(default)s)")
    parser.add_argument("--model", metavar="NAME", choices=sorted(PRESETS), default=None,
                        help=f"preset: {', '.join(PRESETS)} (default: digits for the digits "
                             f"dataset, else sfc)")
    parser.add_argument("--hidden", metavar="SIZES", type=_sizes, default=None,
                        help="hidden layer sizes of an MLP overriding the preset, e.g. 256,256")
    parser.add_argument("--layers", metavar="SPEC", default=None,
                        help="layers overriding the preset: comma-separated conv:CHANNELS:KERNEL, "
                             "pool:SIZE and dense:NEURONS, e.g. conv:16:3,pool:2,dense:64")
    parser.add_argument("--scaling", choices=SCALINGS, default=d.scaling,
                        help="weight scaling (default: %(default)s)")
    parser.add_argument("--weight-bases", metavar="M", type=int, default=d.weight_bases,
                        help="ABC-Net: binary weight bases per layer "
                             "(default: %(default)s)")
    parser.add_argument("--act-bases", metavar="N", type=int, default=d.act_bases,
                        help="ABC-Net: binary activation bases per hidden layer "
                             "(default: %(default)s)")
    parser.add_argument("--fraction-bits", metavar="F", type=int, default=d.fraction_bits,
                        help="ABC-Net: coefficients are integers 1..2**F "
                             "(default: %(default)s)")
    parser.add_argument("--quantize-epochs", metavar="N", type=int, default=None,
                        help="ABC-Net: the last N epochs train with the integer coefficients "
                             "(default: a sixth of the epochs)")
    parser.add_argument("--epochs", metavar="N", type=int, default=None,
                        help="binarized training epochs (default: the preset's)")
    parser.add_argument("--real-epochs", metavar="N", type=int, default=d.real_epochs,
                        help="two-step training: real-valued epochs first (default: %(default)s)")
    parser.add_argument("--batch-size", metavar="N", type=int, default=None,
                        help="frames per step (default: the preset's)")
    parser.add_argument("--lr", metavar="LR", type=float, default=d.lr,
                        help="initial Adam learning rate (default: %(default)s)")
    parser.add_argument("--schedule", choices=SCHEDULES, default=d.schedule,
                        help="learning-rate schedule (default: %(default)s)")
    parser.add_argument("--dropout", metavar="P", type=float, default=d.dropout,
                        help="dropout probability in training (default: %(default)s)")
    parser.add_argument("--shift", metavar="PIXELS", type=int, default=d.shift,
                        help="augment: move training images by up to PIXELS in x and y "
                             "(default: %(default)s)")
    parser.add_argument("--seed", metavar="N", type=int, default=d.seed,
                        help="random seed (default: %(default)s)")
    parser.add_argument("--threads", metavar="N", type=int, default=d.threads,
                        help="torch CPU threads per process (default: %(default)s)")
    parser.add_argument("--device", choices=distributed.DEVICES, default=d.device,
                        help="where to train: cpu, cuda, or auto: cuda when there is a GPU "
                             "(default: %(default)s); under torchrun, data-parallel over the "
                             "processes (gloo on CPUs, NCCL on GPUs)")
    parser.add_argument("--checkpoint-dir", metavar="DIR", default=None,
                        help="keep per-epoch checkpoints here (default: FILE.ckpt, removed "
                             "when done)")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run from its checkpoint")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="do not show a progress bar")
    return parser


def _sizes(text):
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, not {text!r}") from None


def config_from_args(args):
    """Return the :class:`Config` for arguments parsed with :func:`add_arguments`."""
    return Config(dataset=args.dataset, model=args.model, hidden=args.hidden, layers=args.layers,
                  scaling=args.scaling, weight_bases=args.weight_bases,
                  act_bases=args.act_bases, fraction_bits=args.fraction_bits,
                  quantize_epochs=args.quantize_epochs,
                  epochs=args.epochs, real_epochs=args.real_epochs,
                  shift=args.shift,
                  batch_size=args.batch_size, lr=args.lr, schedule=args.schedule,
                  dropout=args.dropout, seed=args.seed, threads=args.threads,
                  device=args.device,
                  checkpoint_dir=args.checkpoint_dir, resume=args.resume,
                  output=str(args.output), progress=args.progress)


def run_from_args(args):
    """Run ``bnnhw train``: train, export, check, print a short table; return an exit code."""
    try:
        config = config_from_args(args).resolved()
        # Without a progress bar, one line per epoch on stderr.
        log = None if config.progress else (lambda text: print(text, file=sys.stderr,
                                                                flush=True))
        path = main_train(config, log=log)
    except (ConfigError, DatasetError, export_.SelfCheckError,
            distributed.DeviceError) as error:
        print(f"bnnhw: error: {error}", file=sys.stderr)
        return 1
    if path is None:                         # a torchrun process other than rank 0
        return 0
    print(summary(artifact.load(path), path))
    return 0


def summary(net, path):
    """Return a short table describing a trained network file (from its provenance)."""
    p = net.provenance
    shapes = [tensor.describe().split()[0] if tensor is not None else str(net.classes)
              for tensor in net.tensors]
    seconds = sum(r["seconds"] for r in p["history"])
    return "\n".join([
        f"network      {path} ({'-'.join(shapes)}, {net.weight_bits():,} weight bits)",
        f"dataset      {p['dataset']['name']} ({p['dataset']['train_frames']:,} train / "
        f"{p['dataset']['test_frames']:,} test frames)",
        f"training     {len(p['history'])} epochs in {seconds:.1f} s, "
        f"{seconds / max(len(p['history']), 1):.2f} s/epoch ({p['training']['threads']} threads"
        + (f" x {p['processes']} processes" if p.get("processes", 1) > 1 else "")
        + (f", {p['device']}" if "device" in p else "") + ")",
        export_.format_report(p["self_check"]),
    ])
