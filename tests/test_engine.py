"""Training engine on CPU: LR schedule, data order, atomic checkpoints, a tiny CCNet run, evaluation, NaN guard.

The training runs use the tiny backbone on synthetic Cityscapes-format images of 32x64.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import random

import numpy as np
import pytest
import torch

from cca.engine import checkpoint, runlog
from cca.engine.config import apply_overrides
from cca.engine.presets import get_config
from cca.engine.sampling import InfiniteLoader, ResumableDistributedSampler, SeededSamples, ShardSampler
from cca.engine.schedule import PolyWithWarmup, poly_scheduler
from cca.engine.train import micro_batch_size

# --- LR schedule -----------------------------------------------------------------------------


def test_poly_schedule_matches_formula():
    total, power, base = 50, 0.9, 0.01
    params = [torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.SGD(
        [{"params": params, "lr": base}, {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 10 * base}]
    )
    sched = poly_scheduler(opt, total, power)
    for it in range(total):
        expected = base * (1 - it / total) ** power
        assert math.isclose(opt.param_groups[0]["lr"], expected, rel_tol=1e-12)
        assert math.isclose(opt.param_groups[1]["lr"], 10 * expected, rel_tol=1e-12)
        opt.step()
        sched.step()


def test_warmup_is_linear_then_poly():
    f = PolyWithWarmup(total=100, power=0.9, warmup=10, warmup_ratio=0.1)
    assert math.isclose(f(0), 0.1)
    for it in range(10):
        assert math.isclose(f(it), (1 - it / 100) ** 0.9 * (0.1 + 0.9 * it / 10))
    assert math.isclose(f(10), (1 - 10 / 100) ** 0.9) and f(100) == 0.0
    assert pickle.loads(pickle.dumps(f)).__dict__ == f.__dict__  # LambdaLR.state_dict keeps it
    with pytest.raises(ValueError, match="warmup"):
        PolyWithWarmup(total=10, warmup=11)


def test_head_lr_multiplier_groups():
    from cca.engine.builders import build_optimizer

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = torch.nn.Conv2d(3, 4, 1)
            self.head = torch.nn.Conv2d(4, 2, 1)

    net = Net()
    opt = build_optimizer(net, apply_overrides(get_config("smoke"), ["lr=0.01", "head_lr_mult=10", "weight_decay=5e-4"]))
    (backbone, head) = opt.param_groups
    assert {id(p) for p in backbone["params"]} == {id(p) for p in net.backbone.parameters()}
    assert {id(p) for p in head["params"]} == {id(p) for p in net.head.parameters()}
    assert backbone["lr"] == 0.01 and math.isclose(head["lr"], 0.1)
    assert backbone["momentum"] == 0.9 and head["weight_decay"] == 5e-4
    with pytest.raises(ValueError, match="head_lr_mult"):
        build_optimizer(torch.nn.Linear(2, 2), apply_overrides(get_config("smoke"), ["head_lr_mult=10"]))


# --- data order ------------------------------------------------------------------------------


class _Numbers(torch.utils.data.Dataset):
    """Item ``i`` is ``(i, a random draw)``: shows the order and the seeding of each sample."""

    def __len__(self):
        return 11

    def __getitem__(self, i):
        return torch.tensor(i), torch.rand(()) + random.random() + float(np.random.rand())


def _steps(world: int, accum: int, batch: int, n_steps: int, start: dict | None = None):
    """Samples (and their random draws) used in each optimiser step, merged over ``world`` ranks."""
    data = _Numbers()
    micro = batch // (world * accum)
    loaders = []
    for rank in range(world):
        sampler = ResumableDistributedSampler(data, world, rank, seed=3)
        loader = InfiniteLoader(SeededSamples(data, seed=3), sampler, micro, (len(data) // batch) * accum)
        if start is not None:
            loader.load_state_dict(start)
        loaders.append(loader)
    steps = []
    for _ in range(n_steps):
        items = {}
        for loader in loaders:
            for _ in range(accum):
                idx, draw = next(loader)
                items.update(zip(idx.tolist(), draw.tolist(), strict=True))
        steps.append(items)
    return steps, loaders[0].state_dict()


def test_data_order_depends_only_on_global_batch():
    """1 process x 4 accumulation steps, 2 x 2 and 4 x 1 see the same samples, augmented alike, per step."""
    reference, _ = _steps(world=1, accum=4, batch=4, n_steps=7)
    for world, accum in ((2, 2), (4, 1), (1, 1)):
        got, _ = _steps(world=world, accum=accum, batch=4, n_steps=7)
        assert got == reference
    assert all(len(s) == 4 for s in reference)
    first_epoch = set().union(*reference[:2])  # 11 samples -> 2 steps of 4 per epoch
    assert len(first_epoch) == 8


def test_loader_resumes_at_its_position():
    full, _ = _steps(world=2, accum=1, batch=2, n_steps=9)
    _, state = _steps(world=2, accum=1, batch=2, n_steps=4)
    rest, _ = _steps(world=2, accum=1, batch=2, n_steps=5, start=state)
    assert rest == full[4:]


def test_seeded_samples_leave_global_rng_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    SeededSamples(_Numbers(), seed=1)[(0, 5)]
    assert torch.equal(torch.rand(3), expected)


def test_shard_sampler_covers_every_index_once():
    for n, world in ((3, 2), (10, 3), (1, 4), (0, 2)):
        shards = [list(ShardSampler(n, r, world)) for r in range(world)]
        assert sorted(sum(shards, [])) == list(range(n))
    with pytest.raises(ValueError, match="rank"):
        ShardSampler(5, rank=2, world_size=2)


def test_micro_batch_must_divide():
    cfg = apply_overrides(get_config("smoke"), ["batch_size=6", "grad_accum=2"])
    assert micro_batch_size(cfg, world_size=3) == 1
    with pytest.raises(ValueError, match="batch_size=6"):
        micro_batch_size(cfg, world_size=4)


# --- checkpoints and logs --------------------------------------------------------------------


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    checkpoint.save({"iteration": 1, "w": torch.arange(3)}, path)
    real_save = torch.save

    def torn_save(obj, f):  # writes half a file, then dies
        real_save(obj, f)
        f.truncate(10)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save({"iteration": 2, "w": torch.arange(5)}, path)
    monkeypatch.undo()
    state = checkpoint.load(path)
    assert state["iteration"] == 1 and torch.equal(state["w"], torch.arange(3))
    assert os.listdir(tmp_path) == ["last.pt"]  # no temporary left behind
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        checkpoint.load(tmp_path / "nothing.pt")


def test_rng_state_round_trip():
    state = checkpoint.rng_state()
    a = (random.random(), float(np.random.rand()), torch.rand(2))
    checkpoint.set_rng_state(state)
    b = (random.random(), float(np.random.rand()), torch.rand(2))
    assert a[:2] == b[:2] and torch.equal(a[2], b[2])


def test_metrics_log_truncation(tmp_path):
    log = runlog.MetricsLog(tmp_path / "metrics.jsonl")
    for it in range(1, 6):
        log.write({"type": "train", "iter": it, "loss": float("nan") if it == 5 else 1.0 / it})
    with log.path.open("a") as f:
        f.write('{"type": "train", "it')  # torn by a kill
    assert log.truncate_after(3) == 3
    assert [r["iter"] for r in runlog.read_jsonl(log.path)] == [1, 2, 3]
    discarded = (tmp_path / "metrics.discarded.jsonl").read_text().splitlines()
    assert len(discarded) == 3 and json.loads(discarded[1])["loss"] == "nan"


# --- training on synthetic data ----------------------------------------------------------------


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic_cityscapes")


def tiny(data_root, out, *overrides):
    """The smoke preset shrunk for tests: 32x64 synthetic images, 32x32 crops, no periodic eval."""
    return apply_overrides(
        get_config("smoke"),
        [
            f"data_root={data_root}",
            f"output_dir={out}",
            "synthetic_size=32,64",
            "crop_size=32,32",
            "eval_every=0",
            "num_workers=0",
            *overrides,
        ],
    )


@pytest.fixture
def one_thread():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def test_training_reduces_loss_and_writes_run_files(data_root, tmp_path, one_thread):
    from cca.engine.evaluate import evaluate
    from cca.engine.train import train

    cfg = tiny(data_root, tmp_path / "run", "iterations=30", "eval_every=15", "checkpoint_every=10", "lr=0.02")
    summary = train(cfg)
    rows = runlog.read_jsonl(tmp_path / "run" / "metrics.jsonl")
    losses = [r["loss"] for r in rows if r["type"] == "train"]
    assert [r["iter"] for r in rows if r["type"] == "train"] == list(range(1, 31))
    assert np.mean(losses[-5:]) < np.mean(losses[:5]), losses
    lrs = [r["lr"] for r in rows if r["type"] == "train"]
    assert lrs[0] == cfg.lr and all(a > b for a, b in zip(lrs, lrs[1:], strict=False))
    evals = [r for r in rows if r["type"] == "eval"]
    assert [r["iter"] for r in evals] == [15, 30] and all(r["num_images"] == cfg.synthetic_num_val for r in evals)

    run = tmp_path / "run"
    assert json.loads((run / "config.json").read_text())["iterations"] == 30
    last = checkpoint.load(run / "last.pt")
    assert last["iteration"] == 30 and {"model", "optimizer", "scheduler", "scaler", "rng", "data"} <= set(last)
    best = checkpoint.load(run / "best.pt")
    assert math.isclose(best["miou"], max(r["miou"] for r in evals)) and summary["best_miou"] == best["miou"]

    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["iou"]) == 19 and "road" in metrics["iou"]  # Cityscapes class names
    assert math.isclose(metrics["miou"], evals[-1]["miou"])

    # evaluating the last checkpoint again gives the training run's final numbers
    out = evaluate(run / "last.pt", output_dir=tmp_path / "eval")
    assert math.isclose(out["miou"], evals[-1]["miou"], rel_tol=1e-9) and out["num_images"] == cfg.synthetic_num_val
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["iou"] == pytest.approx(metrics["iou"])

    # the command line: sliding window + flip over the best checkpoint
    from cca.__main__ import main

    assert main(["evaluate", "--checkpoint", str(run / "best.pt"), "--set", "eval_mode=slide", "eval_flip=true",
                 "--out", str(tmp_path / "eval_cli")]) == 0
    cli = json.loads((tmp_path / "eval_cli" / "metrics.json").read_text())
    assert cli["eval"] == {"mode": "slide", "crop": [32, 32], "stride": [22, 22], "scales": [1.0], "flip": True}
    assert cli["iteration"] == best["iteration"] and 0.0 <= cli["miou"] <= 1.0

    with pytest.raises(FileExistsError, match="--resume"):
        train(cfg)


def test_loader_workers_do_not_change_losses(data_root, tmp_path, one_thread):
    """Augmentation is seeded per sample, so 0 or 2 data-loader processes give the same run."""
    from cca.engine.train import train

    losses = []
    for workers in (0, 2):
        train(tiny(data_root, tmp_path / f"w{workers}", "iterations=4", f"num_workers={workers}"))
        losses.append([r["loss"] for r in runlog.read_jsonl(tmp_path / f"w{workers}" / "metrics.jsonl") if r["type"] == "train"])
    assert losses[0] == losses[1] and len(set(losses[0])) == 4


def test_resume_without_checkpoint_is_an_error(data_root, tmp_path):
    from cca.engine.train import train

    with pytest.raises(FileNotFoundError, match="last.pt"):
        train(tiny(data_root, tmp_path / "empty"), resume=True)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(data_root, tmp_path, one_thread):
    from cca.engine.train import train

    cfg = tiny(data_root, tmp_path / "run", "iterations=20", "checkpoint_every=1", "lr=1e30")
    with pytest.raises(FloatingPointError, match=r"loss is not finite at iteration (\d+): loss=") as info:
        train(cfg)
    message = str(info.value)
    bad_iter = int(message.split("iteration ")[1].split(":")[0])
    assert 1 < bad_iter <= 20 and "main=" in message and "aux=" in message
    last = checkpoint.load(tmp_path / "run" / "last.pt")
    assert last["iteration"] == bad_iter - 1 and f"iteration {bad_iter - 1}" in message
    rows = runlog.read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert rows[-1]["type"] == "error" and rows[-1]["iter"] == bad_iter
