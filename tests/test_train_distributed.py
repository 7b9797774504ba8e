"""Training on a chosen device (``--device``) and data-parallel under torchrun (gloo on CPU).

The torchrun tests start ``python -m torch.distributed.run --standalone --nproc_per_node 2``
(torchrun's own module) on this Python, one thread per process."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from bnnhw import artifact
from bnnhw.train import distributed
from bnnhw.train import train as t

MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "mnist"


def torchrun(*args, processes=2, timeout=300):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={processes}", *map(str, args)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def test_auto_device_says_which_it_used():
    context = distributed.setup("auto")
    assert context.world == 1 and context.rank == 0
    if torch.cuda.is_available():
        assert context.device.type == "cuda" and "auto: CUDA found" in context.describe()
    else:
        assert context.device == torch.device("cpu")
        assert context.describe() == "cpu (auto: no CUDA device)"
    assert distributed.setup("cpu").describe() == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is there")
def test_cuda_without_a_gpu_is_one_clear_error(tmp_path, capsys):
    import argparse
    parser = argparse.ArgumentParser()
    t.add_arguments(parser)
    args = parser.parse_args(["-o", str(tmp_path / "n.npz"), "--device", "cuda",
                              "--epochs", "1", "--no-progress"])
    assert t.run_from_args(args) == 1
    assert capsys.readouterr().err == (
        "bnnhw: error: device 'cuda': no CUDA device is available (torch.cuda.is_available() "
        "is False); use --device cpu or auto\n")
    assert not (tmp_path / "n.npz").exists()


def test_device_and_batch_split_are_checked():
    with pytest.raises(t.ConfigError, match=r"^device 'tpu' is not one of auto, cpu, cuda$"):
        t.Config(device="tpu").resolved()
    with pytest.raises(t.ConfigError, match=r"^batch_size 33 must split into 2 processes' "
                                            r"batches of at least 2 frames each$"):
        t.Config(batch_size=33, processes=2).resolved()
    # One process: recorded as before (no device, no processes among the training fields).
    fields = t.Config().resolved().training_fields()
    assert "device" not in fields and "processes" not in fields
    assert t.Config(processes=2).resolved().training_fields()["processes"] == 2


@pytest.mark.slow
def test_torchrun_two_processes_train_digits_like_one(tmp_path):
    """Rank 0 alone writes the file; it passes the self-check, and its accuracy is that of a
    one-process run of the same recipe (5 epochs here: within 3 points; bench/RESULTS.md has
    full runs)."""
    options = ["--epochs", "5", "--threads", "1", "--no-progress", "--seed", "0"]
    two = torchrun("-m", "bnnhw.train", "-o", tmp_path / "two.npz", *options)
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("network      ") == 1             # one summary: rank 0's
    assert "train: cpu (" in two.stderr and "2 processes (gloo)" in two.stderr
    assert sorted(os.listdir(tmp_path)) == ["two.npz"]         # checkpoint gone, no leftovers
    net = artifact.load(tmp_path / "two.npz")
    p = net.provenance
    assert p["processes"] == 2 and p["training"]["processes"] == 2 and p["device"] == "cpu"
    check = p["self_check"]
    assert check["class_agreement"] == check["frames"] == 359     # torch vs golden: all agree
    assert p["golden_test_accuracy"] == p["torch_test_accuracy"] >= 0.9
    assert len(p["history"]) == 5

    one = t.main_train(t.Config(epochs=5, threads=1, progress=False, seed=0,
                                output=str(tmp_path / "one.npz")))
    single = artifact.load(one).provenance
    assert single["processes"] == 1 and "processes" not in single["training"]
    assert abs(single["golden_test_accuracy"] - p["golden_test_accuracy"]) <= 0.03


@pytest.mark.slow
def test_processes_with_different_seeds_are_refused(tmp_path):
    script = tmp_path / "differ.py"
    script.write_text(textwrap.dedent("""
        import os, torch
        from bnnhw.train import distributed
        context = distributed.setup("cpu")
        torch.manual_seed(int(os.environ["RANK"]))       # a different seed per process
        model = torch.nn.Linear(4, 3)
        try:
            distributed.check_same_parameters(model, context)
        except distributed.DeviceError as error:
            print(f"refused: {error}")
        else:
            print("accepted")
        torch.manual_seed(5)                              # the same seed everywhere
        distributed.check_same_parameters(torch.nn.Linear(4, 3), context)
        print("same: accepted")
        distributed.teardown(context)
    """))
    run = torchrun(script)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("refused: the processes start from different weights; give each "
                            "the same --seed") == 2
    assert run.stdout.count("same: accepted") == 2


@pytest.mark.slow
@pytest.mark.skipif(not MNIST.is_dir(), reason="the shared MNIST folder is absent")
def test_torchrun_trains_the_mnist_tfc_preset(tmp_path):
    run = torchrun("-m", "bnnhw.train", "-o", tmp_path / "tfc.npz", "--dataset", MNIST,
                   "--model", "tfc", "--epochs", "1", "--threads", "1", "--no-progress",
                   timeout=600)
    assert run.returncode == 0, run.stderr
    p = artifact.load(tmp_path / "tfc.npz").provenance
    assert p["processes"] == 2 and p["dataset"]["name"] == "mnist"
    assert p["golden_test_accuracy"] == p["torch_test_accuracy"] > 0.8
