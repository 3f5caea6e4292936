"""Optional Weights & Biases mirror of a run's TensorBoard scalars (``log.wandb: true``).

TensorBoard stays the record: the run directory's event files, ``scalars.csv``
and checkpoints are written exactly as without it.  With ``log.wandb`` the
trainer opens a W&B run with ``sync_tensorboard=True`` before its
``SummaryWriter`` exists, so every scalar the writer logs is mirrored with
its iteration as ``global_step``.

- ``log.wandb_mode: offline`` (the default) writes the W&B run under
  ``RUN_DIR/wandb/offline-run-*``; nothing goes over the network, and
  ``wandb sync RUN_DIR/wandb/offline-run-*`` uploads it later.
- ``online`` streams to the server and needs ``wandb login`` first.
- Each ``metarl train`` invocation is one W&B run, named after the run
  directory and grouped by it: a resumed run appears as a second W&B run of
  the same group, starting at the iteration it resumed from.
- The flattened config is the W&B run's config.

wandb is not a dependency: with ``log.wandb: true`` and wandb missing,
:func:`check` fails with one line before anything is written.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from metarl.config import Config, ConfigError, flat_dict, to_dict


def check(cfg: Config) -> None:
    """Raise :class:`ConfigError` if ``cfg`` asks for wandb and it is not installed."""
    if cfg.log.wandb and importlib.util.find_spec("wandb") is None:
        raise ConfigError("log.wandb: true needs the wandb package, which is not installed "
                          "(pip install wandb, or set log.wandb=false)")


@contextlib.contextmanager
def mirror(cfg: Config, run_dir: Path, start_iteration: int) -> Iterator[Any]:
    """A W&B run mirroring TensorBoard for the block's duration (``None`` without ``log.wandb``).

    Open it before the ``SummaryWriter``: ``sync_tensorboard`` patches the
    writer class.  The W&B run is finished on the way out, with exit code 0
    when the block ends normally and 1 when it raises (an interrupt too),
    and wandb's service process is stopped.
    """
    if not cfg.log.wandb:
        yield None
        return
    import wandb  # Trainer.__init__ checked that it is installed

    run_dir = Path(run_dir)
    os.environ.setdefault("WANDB_SILENT", "true")  # its banner would interleave with the progress bar
    suffix = f" (from iteration {start_iteration})" if start_iteration else ""
    wb = wandb.init(project=cfg.log.wandb_project, mode=cfg.log.wandb_mode, dir=str(run_dir),
                    name=run_dir.name + suffix, group=run_dir.name, job_type="train",
                    config=flat_dict(to_dict(cfg)), sync_tensorboard=True)
    ok = False
    try:
        yield wb
        ok = True
    finally:
        wb.finish(exit_code=0 if ok else 1)
        wandb.teardown()  # stop wandb's service process: nothing of W&B outlives the run
