"""metarl: meta-reinforcement learning (MAML-TRPO, ANIL, Meta-SGD) on MuJoCo task families."""

__version__ = "0.1.0"
