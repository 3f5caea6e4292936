"""Raw HalfCheetah physics rate under two (or more) mujoco installations, interleaved in one run.

The suite pins one mujoco; whether another release steps the same model
faster can only be told by timing both on the same machine at the same
time.  Give the Python interpreters of virtualenvs that have the versions
to compare (each needs only ``mujoco`` and ``numpy``); the model is
gymnasium's ``half_cheetah.xml`` from this interpreter's gymnasium, the
loop ``data.ctrl[:] = a; mj_step(model, data, nstep=5)`` over seeded
random actions, best of 3 per call.  Calls alternate between the
interpreters for ``--rounds`` rounds; the ratio uses each one's median.

    python -m venv /tmp/mj4 && /tmp/mj4/bin/pip install mujoco==4.0.0 numpy
    python benchmarks/bench_mujoco_versions.py .venv/bin/python /tmp/mj4/bin/python
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

LOOP = r"""
import sys, time, warnings
import numpy as np, mujoco
model = mujoco.MjModel.from_xml_path(sys.argv[1])
data = mujoco.MjData(model)
actions = np.random.default_rng(0).uniform(-1, 1, (int(sys.argv[2]), model.nu))
best = float("inf")
for _ in range(3):
    mujoco.mj_resetData(model, data)
    t = time.perf_counter()
    for a in actions:
        data.ctrl[:] = a
        mujoco.mj_step(model, data, nstep=5)
    best = min(best, time.perf_counter() - t)
print(mujoco.__version__, len(actions) / best)
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pythons", nargs="+", help="interpreters, each with its own mujoco")
    p.add_argument("--steps", type=int, default=2000, help="env steps per timed loop")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    import gymnasium

    xml = Path(gymnasium.__file__).parent / "envs" / "mujoco" / "assets" / "half_cheetah.xml"
    rates: dict[str, list[float]] = {}
    versions: dict[str, str] = {}
    for _ in range(args.rounds):
        for py in args.pythons:
            out = subprocess.run([py, "-W", "ignore", "-c", LOOP, str(xml), str(args.steps)], check=True,
                                 capture_output=True, text=True).stdout.split()
            versions[py], rate = out[0], float(out[1])
            rates.setdefault(py, []).append(rate)
    base = statistics.median(rates[args.pythons[0]])
    print(f"HalfCheetah raw ctrl + mj_step x5, {args.steps} steps, best of 3 per call, "
          f"median of {args.rounds} interleaved calls")
    for py in args.pythons:
        med = statistics.median(rates[py])
        calls = ", ".join(f"{r:.0f}" for r in rates[py])
        print(f"  mujoco {versions[py]:<8} {med:8.0f} env steps/s  (calls: {calls})  "
              f"ratio to the first {med / base:.2f}")


if __name__ == "__main__":
    sys.exit(main())
