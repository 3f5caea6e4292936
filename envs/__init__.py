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
    family_env_class,
    family_names,
    make_family,
    register_family,
)
from envs.check import check_family
from envs.half_cheetah import HalfCheetahDirEnv, HalfCheetahVelEnv
from envs.metaworld import MetaWorldML1Env, MetaWorldML10Env
from envs.navigation import Navigation2DEnv
from envs.rand_params import HopperParamsEnv, Walker2dParamsEnv

register_family("Navigation2D", Navigation2DEnv, horizon=100,
                description="goal ~ U[-0.5,0.5]^2; reward -||s-g||_2; done when |s-g|_inf < 0.01")
register_family("HalfCheetahVel", HalfCheetahVelEnv, horizon=100,
                description="v* ~ U[0,2]; reward -|v_x-v*| - 0.05||a||^2 (horizon 200 in the MAML paper)")
register_family("HalfCheetahDir", HalfCheetahDirEnv, horizon=100,
                description="d in {-1,+1}; reward d*v_x - 0.05||a||^2 (horizon 200 in the MAML paper)")
register_family("AntVel", AntVelEnv, horizon=200,
                description="v* ~ U[0,3]; reward -|v_x-v*| + 0.05 - ctrl - contact; "
                            "done if torso z not in [0.2,1]")
register_family("AntDir", AntDirEnv, horizon=200,
                description="d in {-1,+1}; reward d*v_x + 0.05 - ctrl - contact; "
                            "done if torso z not in [0.2,1]")
register_family("AntDir2D", AntDir2DEnv, horizon=200,
                description="angle ~ U[0,2pi); reward v_xy.(cos,sin) + 0.05 - ctrl - contact; "
                            "done if torso z not in [0.2,1]")
register_family("AntGoal", AntGoalEnv, horizon=200,
                description="goal ~ U[-3,3]^2; reward 4 - ||xy-g||_1 + 0.05 - ctrl - contact; "
                            "done if torso z not in [0.2,1]")
register_family("HopperParams", HopperParamsEnv, horizon=200,
                description="mass, inertia, damping, friction scaled by 1.5^U[-3,3]; Hopper-v5 reward")
register_family("Walker2dParams", Walker2dParamsEnv, horizon=200,
                description="mass, inertia, damping, friction scaled by 1.5^U[-3,3]; Walker2d-v5 reward")
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
    "family_env_class",
    "family_names",
    "make_family",
    "register_family",
]
