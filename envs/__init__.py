"""metarl task families.  Importing this package registers every family and
its gymnasium id ``metarl/<Name>-v0``."""

from envs.base import (
    BatchedEnv,
    LoopBatchedEnv,
    Task,
    TaskEnv,
    TaskError,
    TaskFamily,
    describe_families,
    family_names,
    make_family,
    register_family,
)
from envs.navigation import Navigation2DEnv

register_family("Navigation2D", Navigation2DEnv, horizon=100,
                description="goal ~ U[-0.5,0.5]^2; reward -||s-g||_2; done when |s-g|_inf < 0.01")

__all__ = [
    "BatchedEnv",
    "LoopBatchedEnv",
    "Navigation2DEnv",
    "Task",
    "TaskEnv",
    "TaskError",
    "TaskFamily",
    "describe_families",
    "family_names",
    "make_family",
    "register_family",
]
