"""DistributedDataParallel: two CPU processes under ``torchrun`` (gloo) end with one model.

The torchrun test runs one short epoch on the tiny synthetic cache; each rank writes
``rank{r}_digest.json`` (a SHA-256 of its whole state dict, buffers included), and the two
must be identical, and equal to the weights rank 0 saved.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bratseg.model.unet import build_unet
from bratseg.training.run_files import load_checkpoint
from bratseg.training.trainer import DistributedContext, process_group_backend, state_dict_sha256


def torchrun() -> list[str]:
    """torchrun of this interpreter's environment."""
    exe = Path(sys.executable).with_name("torchrun")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "torch.distributed.run"]


def _two_ranks(*program: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``program`` (a script or ``-m module``, with its arguments) as two processes under torchrun."""
    cmd = [*torchrun(), "--standalone", "--nproc_per_node", "2", *program]
    # One thread per rank: two ranks on two cores; CUDA hidden so the ranks take the CPU path.
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _train_two_ranks(cache: Path, run: Path, *options: str) -> subprocess.CompletedProcess:
    train = ["-m", "bratseg.cli", "train", "--cache", str(cache), "--out", str(run), "--epochs", "1"]
    train += ["--batch-size", "4", "--max-train-batches", "2", "--num-workers", "0", "--threads", "1", *options]
    return _two_ranks(*train)


def test_two_cpu_processes_end_with_identical_weights(tiny_cache: Path, tmp_path: Path):
    run = tmp_path / "run"
    done = _train_two_ranks(tiny_cache, run)

    digests = [json.loads((run / f"rank{r}_digest.json").read_text()) for r in (0, 1)]
    assert [d["rank"] for d in digests] == [0, 1]
    assert all(d["backend"] == "gloo" and d["world_size"] == 2 for d in digests)
    strip = [{k: v for k, v in d.items() if k != "rank"} for d in digests]
    assert strip[0] == strip[1], "the ranks ended with different weights"

    (record,) = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert record["epoch"] == 1
    assert record["train_slices"] == 2 * 4 * 2  # batches x batch size x ranks
    assert 0 <= record["val_mean_dice"] <= 1

    # One epoch, so the best weights are the final ones: rank 0 saved what both ranks hold.
    model = build_unet(encoder_name="resnet18", in_channels=4, classes=3)
    model.load_state_dict(load_file(str(run / "best.safetensors")))
    assert state_dict_sha256(model) == digests[0]["sha256"]
    assert (run / "model" / "model.safetensors").is_file()
    assert "run written to" in done.stdout


def test_deep_supervision_heads_stay_identical_across_ranks(tiny_cache: Path, tmp_path: Path):
    """The heads live outside DDP: without the trainer's own gradient averaging each rank
    would train them on its own batches alone and end with different heads."""
    config = tmp_path / "ds.json"
    config.write_text(json.dumps({"deep_supervision": 2}))
    run = tmp_path / "run"
    _train_two_ranks(tiny_cache, run, "--config", str(config))
    digests = [json.loads((run / f"rank{r}_digest.json").read_text()) for r in (0, 1)]
    assert digests[0]["heads_sha256"] == digests[1]["heads_sha256"], "the ranks ended with different heads"
    assert digests[0]["sha256"] == digests[1]["sha256"]
    heads = load_checkpoint(run / "last.pt")["supervision"]
    assert len([k for k in heads if k.endswith(".weight")]) == 2


_COLLECTIVES = """
import sys, torch
from bratseg.training.distributed import DistributedContext
ctx = DistributedContext()
torch.manual_seed(ctx.rank)  # each rank starts with other heads on purpose
heads = torch.nn.Linear(3, 2)
ctx.broadcast_parameters(heads)
heads.weight.grad = torch.full_like(heads.weight, float(ctx.rank + 1))
ctx.average_gradients(heads)  # the bias has no gradient on either rank
torch.save({"weight": heads.weight.detach(), "grad": heads.weight.grad, "bias_grad": heads.bias.grad},
           f"{sys.argv[1]}/{ctx.rank}.pt")
ctx.close()
"""


def test_heads_outside_ddp_start_from_rank_0_and_average_their_gradients(tmp_path: Path):
    script = tmp_path / "collectives.py"
    script.write_text(_COLLECTIVES)
    _two_ranks(str(script), str(tmp_path), timeout=120)
    ranks = [torch.load(tmp_path / f"{r}.pt") for r in (0, 1)]
    torch.manual_seed(0)
    assert torch.equal(ranks[0]["weight"], torch.nn.Linear(3, 2).weight.detach())
    assert torch.equal(ranks[1]["weight"], ranks[0]["weight"]), "rank 1 kept its own heads"
    for r in ranks:
        assert torch.equal(r["grad"], torch.full((2, 3), 1.5)), "not the mean of the ranks' gradients"
        assert torch.equal(r["bias_grad"], torch.zeros(2))


def test_backend_follows_the_device():
    assert process_group_backend(torch.device("cpu")) == "gloo"
    assert process_group_backend(torch.device("cuda", 0)) == "nccl"


def test_one_process_is_not_distributed(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ctx = DistributedContext()
    assert not ctx.distributed and ctx.is_main and ctx.device.type == "cpu" and ctx.backend == "gloo"
    t = torch.tensor([1.0, 2.0])
    assert ctx.all_reduce(t) is t and t.tolist() == [1.0, 2.0]


def test_digest_tells_buffers_apart():
    a = build_unet(encoder_name="resnet18", in_channels=4, classes=3)
    b = build_unet(encoder_name="resnet18", in_channels=4, classes=3)
    b.load_state_dict(a.state_dict())
    assert state_dict_sha256(a) == state_dict_sha256(b)
    next(m for m in b.modules() if isinstance(m, torch.nn.BatchNorm2d)).running_var[0] += 1e-3
    assert state_dict_sha256(a) != state_dict_sha256(b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (NCCL)")
def test_nccl_reduces_cpu_statistics(monkeypatch, tmp_path: Path):
    """Under NCCL the trainer's CPU tensors (loss sums, Dice statistics) must still reduce:
    NCCL itself only takes GPU tensors. A one-process NCCL group on the GPU checks the path."""
    import torch.distributed as dist

    env = {"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29533"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    ctx = DistributedContext()
    assert ctx.device.type == "cuda" and ctx.backend == "nccl"
    dist.init_process_group(ctx.backend, rank=0, world_size=1)
    try:
        ctx.distributed = True  # one rank, but through the collective calls
        stats = torch.tensor([3.0, 4.0], dtype=torch.float64)
        assert ctx.all_reduce(stats) is stats and stats.tolist() == [3.0, 4.0]
        model = torch.nn.BatchNorm2d(3).to(ctx.device)
        ctx.sync_buffers(model)
        ctx.barrier()
    finally:
        dist.destroy_process_group()
    shutil.rmtree(tmp_path, ignore_errors=True)
