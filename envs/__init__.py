"""metarl task families.  Importing this package registers every family and
its gymnasium id ``metarl/<Name>-v0``."""

from envs.ant import AntDir2DEnv, AntDirEnv, AntGoalEnv, AntVelEnv
from envs.base import (
    BatchedEnv,
    LoopBatchedEnv,
    Task,
    TaskEnv,
    TaskError,
    TaskFamily,
    describe_families,
    family_class,
    family_names,
    make_family,
    register_family,
    unknown_family_message,
)
from envs.check import check_family
from envs.half_cheetah import HalfCheetahDirEnv, HalfCheetahVelEnv
from envs.metaworld import MetaWorldML1Env, MetaWorldML10Env
from envs.navigation import Navigation2DEnv
from envs.rand_params import HopperParamsEnv, Walker2dParamsEnv

# `metarl tasks` shows each class docstring's first line (task distribution, reward).
register_family("Navigation2D", Navigation2DEnv, horizon=100)
register_family("HalfCheetahVel", HalfCheetahVelEnv, horizon=100)
register_family("HalfCheetahDir", HalfCheetahDirEnv, horizon=100)
register_family("AntVel", AntVelEnv, horizon=200)
register_family("AntDir", AntDirEnv, horizon=200)
register_family("AntDir2D", AntDir2DEnv, horizon=200)
register_family("AntGoal", AntGoalEnv, horizon=200)
register_family("HopperParams", HopperParamsEnv, horizon=200)
register_family("Walker2dParams", Walker2dParamsEnv, horizon=200)
register_family("MetaWorldML1", MetaWorldML1Env, horizon=500,
                description="Meta-World ML1 (kwarg env_name, default reach-v3): 50 train / 50 test goals; "
                            "Meta-World's reward; success in info")
register_family("MetaWorldML10", MetaWorldML10Env, horizon=500,
                description="Meta-World ML10: 10 train / 5 test environments x 50 goals; Meta-World's reward; "
                            "success in info")

__all__ = [
    "AntDir2DEnv",
    "AntDirEnv",
    "AntGoalEnv",
    "AntVelEnv",
    "HalfCheetahDirEnv",
    "HalfCheetahVelEnv",
    "HopperParamsEnv",
    "MetaWorldML1Env",
    "MetaWorldML10Env",
    "Walker2dParamsEnv",
    "check_family",
    "BatchedEnv",
    "LoopBatchedEnv",
    "Navigation2DEnv",
    "Task",
    "TaskEnv",
    "TaskError",
    "TaskFamily",
    "describe_families",
    "unknown_family_message",
    "family_class",
    "family_names",
    "make_family",
    "register_family",
]
