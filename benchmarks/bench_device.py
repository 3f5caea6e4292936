"""The learner on CUDA against the learner on CPU: the same first iterations, the outer step's time on each.

Trains the first ``--iterations`` (3) meta-iterations of HalfCheetahVel (40 tasks x 20 episodes x horizon
100, MAML-TRPO with the Gauss-Newton curvature) twice from the same seed: once with ``device: cpu``, once with
``device: cuda`` (``--device`` picks ``cuda:N``).  The workers sample on CPU in both runs; only the learner
(the baseline fit, the inner loop, the outer step and its curvature) moves.

It prints every iteration's pre- and post-adaptation returns on both devices and checks that they agree:

- iteration 0's pre-adaptation return exactly (the same initial parameters, sampled on CPU);
- every other return within ``--rtol`` (default 1e-2) of the CPU run's, relative to its magnitude:
  float32 reductions run in a different order on the GPU, so the adapted and the updated parameters differ in
  their last bits, and the episodes they sample drift apart slowly over iterations.

Then the outer step's time (``time/outer_s``, median over the iterations after the first, which pays for
CUDA's start-up) on each device and the ratio CPU / CUDA.  Exit status 1 if a return is off tolerance.

On a machine without CUDA it says so and exits 0 (nothing to compare).

    python benchmarks/bench_device.py                        # HalfCheetahVel 40x20x100, 3 iterations
    python benchmarks/bench_device.py --device cuda:1 --horizon 200
    python benchmarks/bench_device.py --family Navigation2D --tasks 20
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from metarl.config import load_config
from metarl.trainer import Trainer

KEYS = ("returns/pre_adapt", "returns/post_adapt", "time/outer_s", "time/inner_s", "time/sampling_s")


def run(args: argparse.Namespace, device: str) -> list[dict[str, float]]:
    """The per-iteration scalars of ``args.iterations`` iterations with the learner on ``device``."""
    overrides = [
        f"env.family={args.family}", f"env.horizon={args.horizon}", f"algo.meta_batch_size={args.tasks}",
        f"algo.episodes_per_task={args.episodes}", f"sampler.backend={args.backend}",
        f"sampler.workers={args.workers}", f"iterations={args.iterations}", f"seed={args.seed}",
        f"device={device}", "log.checkpoint_every=1000",
    ]
    cfg = load_config(None, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        results = Trainer(cfg, Path(tmp)).train()
    return [{k: r.scalars[k] for k in KEYS} for r in results]


def off_tolerance(cpu: list[dict[str, float]], cuda: list[dict[str, float]], rtol: float) -> list[str]:
    """The returns on which the two runs disagree (one line each)."""
    bad = []
    for i, (a, b) in enumerate(zip(cpu, cuda, strict=True)):
        for key in ("returns/pre_adapt", "returns/post_adapt"):
            x, y = a[key], b[key]
            exact = i == 0 and key == "returns/pre_adapt"
            ok = x == y if exact else math.isclose(x, y, rel_tol=rtol, abs_tol=1e-6)
            if not ok:
                bad.append(f"iteration {i} {key}: cpu {x:.6f}, cuda {y:.6f} "
                           f"({'must be equal' if exact else f'rtol {rtol:g}'})")
    return bad


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", default="HalfCheetahVel")
    p.add_argument("--tasks", type=int, default=40)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--horizon", type=int, default=100)
    p.add_argument("--backend", default="local")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--device", default="cuda", help="the CUDA device to compare with the CPU (cuda or cuda:N)")
    p.add_argument("--rtol", type=float, default=1e-2, help="relative tolerance of the returns after iteration 0")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print(f"no CUDA here: torch {torch.__version__} sees no CUDA device, so there is nothing to compare "
              "(run this on a machine with a GPU and a CUDA build of torch)")
        return 0
    card = torch.cuda.get_device_name(torch.device(args.device))
    print(f"{args.family}: {args.tasks} tasks x {args.episodes} episodes x horizon {args.horizon}, "
          f"{args.iterations} iterations, seed {args.seed}; learner on cpu ({torch.get_num_threads()} threads) "
          f"and on {args.device} ({card}); {args.backend} sampler with {args.workers} workers on CPU", flush=True)
    cpu = run(args, "cpu")
    cuda = run(args, args.device)
    for i, (a, b) in enumerate(zip(cpu, cuda, strict=True)):
        print(f"iteration {i}: pre {a['returns/pre_adapt']:9.3f} / {b['returns/pre_adapt']:9.3f}, "
              f"post {a['returns/post_adapt']:9.3f} / {b['returns/post_adapt']:9.3f} (cpu / cuda); "
              f"outer {a['time/outer_s']:6.3f} / {b['time/outer_s']:6.3f} s, "
              f"inner {a['time/inner_s']:6.3f} / {b['time/inner_s']:6.3f} s")
    timed = slice(1, None) if len(cpu) > 1 else slice(None)
    t_cpu = statistics.median(r["time/outer_s"] for r in cpu[timed])
    t_cuda = statistics.median(r["time/outer_s"] for r in cuda[timed])
    print(f"outer step (median of iterations {timed.start or 0}..{len(cpu) - 1}): cpu {t_cpu:.3f} s, "
          f"{args.device} {t_cuda:.3f} s; ratio cpu / cuda {t_cpu / t_cuda:.2f}")
    bad = off_tolerance(cpu, cuda, args.rtol)
    for line in bad:
        print(f"off tolerance: {line}")
    print("returns agree" if not bad else f"{len(bad)} return(s) off tolerance")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
