"""The engine's runner of a segmentation training row (:func:`train_runner`): train + evaluate through
:mod:`cca.engine` (``torchrun -m cca train`` when ``--nproc > 1``), metrics in the paper's units."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from experiments.cache import produces
from experiments.rows import read_json
from experiments.spec import ROOT, Options, Row, Table

ENGINE_METRICS = ("miou", "pixel_acc", "mean_acc")


def as_percent(value: float) -> float:
    """The engine reports fractions in [0, 1]; the paper prints percentages."""
    return 100.0 * float(value)


@produces(version=1)  # raise when a change to the engine's training or evaluation changes the numbers
def train_runner(table: Table, row: Row, cfg: Any, options: Options, directory: Path) -> dict[str, float]:
    """Train + evaluate one row through the engine (``torchrun -m cca train`` when ``--nproc > 1``);
    returns the engine's metrics in percent."""
    from cca.engine.checkpoint import previous_path
    from cca.engine.config import save_config

    last = directory / "last.pt"
    resume = last.is_file() or previous_path(last).is_file()
    if options.nproc > 1:
        requested = save_config(cfg, directory / "requested_config.json")
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={options.nproc}",
            "-m", "cca", "train", "--config", str(requested),
        ] + (["--resume"] if resume else [])
        print("  $ " + " ".join(command))
        subprocess.run(command, check=True, cwd=ROOT)
    else:
        from cca.engine.train import train

        train(cfg, resume=resume)
    metrics_path = directory / "metrics.json"
    final = read_json(metrics_path)
    if final is None:
        raise RuntimeError(f"training finished but wrote no {metrics_path}")
    return {key: as_percent(final[key]) for key in ENGINE_METRICS if key in final}
