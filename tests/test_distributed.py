"""Data-parallel training with torchrun: two CPU processes (gloo) match one process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from apprentice_hw.distill.distributed import SyncBatchNorm2d, World, convert_batchnorm, shard


def _train(recipe: Path, out: Path, processes: int) -> subprocess.CompletedProcess:
    command = ["-m", "apprentice_hw", "train", "-r", str(recipe), "--epochs", "1", "-o", str(out)]
    if processes > 1:
        torchrun = Path(sys.executable).with_name("torchrun")
        command = [str(torchrun), "--standalone", "--nproc_per_node", str(processes),
                   *command]  # fmt: skip
    else:
        command = [sys.executable, *command]
    return subprocess.run(command, capture_output=True, text=True, check=True, timeout=600)


def test_two_processes_match_one_process(tiny_recipe, tmp_path):
    # A few optimizer steps: long enough to exercise sharding, gradient sums and SyncBatchNorm,
    # short enough that float summation-order noise (1e-7) is not amplified by SGD into
    # chaos (two epochs reach 1e-3 on some CPUs, e.g. AMD EPYC without AVX-512).
    text = tiny_recipe.read_text().replace(
        'dataset = "digits"', 'dataset = "digits"\ntrain_limit = 512'
    )
    tiny_recipe.write_text(text)
    single = _train(tiny_recipe, tmp_path / "single", 1)
    double = _train(tiny_recipe, tmp_path / "double", 2)
    assert "(1 process)" in single.stdout and "(2 processes)" in double.stdout
    assert double.stdout.count("training written") == 1  # only the main rank reports
    for name in ("teacher.pt", "student.pt"):
        one = torch.load(tmp_path / "single" / name, weights_only=True)
        two = torch.load(tmp_path / "double" / name, weights_only=True)
        assert set(one) == set(two)
        for key in one:
            # Float summation order differs between the runs; quantization rounding can
            # amplify it slightly, hence 1e-4 rather than 1e-6.
            assert torch.allclose(one[key].float(), two[key].float(), rtol=1e-3, atol=1e-4), (
                f"{name}: {key} differs by {(one[key].float() - two[key].float()).abs().max()}"
            )


def test_shards_cover_the_batch_in_order():
    x, y = torch.arange(10.0)[:, None], torch.arange(10)
    parts = [shard(x, y, World(rank, 3)) for rank in range(3)]
    assert torch.equal(torch.cat([p[0] for p in parts]), x)
    assert [len(p[1]) for p in parts] == [4, 3, 3]
    assert shard(x, y, World())[0] is x


def test_sync_batchnorm_equals_batchnorm_in_one_process():
    torch.manual_seed(0)
    native = torch.nn.Sequential(torch.nn.BatchNorm2d(3))
    native[0].weight.data.uniform_()
    synced = convert_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm2d(3)))
    synced.load_state_dict(native.state_dict())
    assert isinstance(synced[0], SyncBatchNorm2d)
    x = torch.randn(8, 3, 5, 5)
    assert torch.allclose(native(x), synced(x), atol=1e-5)
    assert torch.allclose(native[0].running_var, synced[0].running_var, atol=1e-6)
    native.eval()
    synced.eval()
    assert torch.equal(native(x), synced(x))
    for model in (native, synced):  # momentum None: a cumulative average (BatchNorm re-estimation)
        model[0].reset_running_stats()
        model[0].momentum = None
        model.train()
        model(x)
        model(x * 3 + 1)
    assert torch.allclose(native[0].running_mean, synced[0].running_mean, atol=1e-6)
    assert torch.allclose(native[0].running_var, synced[0].running_var, atol=1e-5)
