"""The campaigns, defined once: families and their configs, methods, budgets, run names, paper figures.

``reproduce.py`` trains and evaluates them; the report scripts
(``locomotion_report.py``, ``metaworld_report.py``, ``depth_report.py``,
``outer_report.py``) read their runs.  Nothing here trains or reads a run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "experiments" / "configs"
FAMILY_CONFIGS = {
    "Navigation2D": "navigation2d.yaml",
    "HalfCheetahDir": "halfcheetah_dir.yaml",
    "HalfCheetahVel": "halfcheetah_vel.yaml",
    "AntVel": "ant_vel.yaml",
    "AntDir": "ant_dir.yaml",
}
# Raghu et al. 2020 (ANIL), table 2: mean ± std over 3 seeds after adaptation, with a typographic minus as
# RESULTS.md writes numbers; the table does not state its horizon (RESULTS.md: its HalfCheetahVel figures
# fit horizon 200, not 100).
ANIL_PAPER = {
    ("HalfCheetahDir", "maml"): "170.4 ± 21.0", ("HalfCheetahDir", "anil"): "363.2 ± 14.8",
    ("HalfCheetahVel", "maml"): "−139.0 ± 18.9", ("HalfCheetahVel", "anil"): "−120.9 ± 6.3",
    ("Navigation2D", "maml"): "−20.3 ± 3.2", ("Navigation2D", "anil"): "−20.1 ± 2.3",
}
MAML_PAPER = {  # Finn et al. 2017, fig. 5: MAML after 0 / 1 / 2 / 3 inner steps (40 test tasks, horizon 200)
    "Navigation2D": [-40.4, -11.7, -3.3, -3.2],
    "HalfCheetahVel": [-129.5, -78.6, -66.6, -60.8],
    "HalfCheetahDir": [-50.7, 293.2, 313.5, 315.7],
    "AntVel": [30.6, 96.7, 100.1, 101.4],
    "AntDir": [8.7, 499.1, 500.7, 499.1],
}
METHODS = {
    "maml": [],
    "anil": ["policy.adapt=head"],
    "anil_log_std": ["policy.adapt=head_log_std"],
    "anil_meta_sgd": ["policy.adapt=head", "algo.inner_update=meta_sgd"],
    "anil_lr_x3": ["policy.adapt=head", "algo.inner_lr=0.3"],  # three times the reference inner lr, in training
    "pretrained": ["algo.inner_steps=0"],
    "random": ["iterations=0"],
    "oracle": ["algo.inner_steps=0", "env.oracle=true"],
    "promp": ["algo.name=promp"],
    "maml_ppo": ["algo.name=maml_ppo"],
}
INNER_UPDATES = {"maml": "sgd", "kronecker": "kronecker", "meta_sgd": "meta_sgd", "lstm": "lstm",
                 "blur": "blur"}  # method -> algo.inner_update
# MAML-TRPO with a learned inner update, as methods of their own (the depth sweep uses the same names)
METHODS.update({m: [f"algo.inner_update={u}"] for m, u in INNER_UPDATES.items() if m != "maml"})
METHODS["cavia"] = ["policy.adapt=context"]  # with experiments/configs/cavia/ (its RL code's policy, inner lr 1.0)
# BLUR's genome by CMA-ES (es.init_from, the same seed's MAML run, is added per run: rules_config)
METHODS["blur_cma"] = ["algo.name=es", "algo.inner_update=blur", "es.method=cma", "es.params=rule"]
METHOD_LABELS = {"promp": "ProMP", "maml_ppo": "MAML-PPO", "maml": "MAML-TRPO", "anil": "ANIL",
                 "anil_log_std": "ANIL, head + log-std",
                 "anil_meta_sgd": "ANIL + Meta-SGD", "anil_lr_x3": "ANIL, inner lr 0.3",
                 "kronecker": "MAML-TRPO + Kronecker", "meta_sgd": "Meta-SGD", "cavia": "CAVIA",
                 "lstm": "MAML-TRPO + LSTM optimizer", "blur": "MAML-TRPO + BLUR",
                 "blur_cma": "BLUR genome by CMA-ES"}

# budgets (meta-iterations per run) and roots of reproduce.py's subcommands
BUDGETS = {"maml": 100, "anil": 200, "locomotion": 500, "outer": 100, "depth": 100, "metaworld": 100,
           "anil2019": 500, "cavia": 100, "rules": 100, "rl2": 150}
ROOTS = {"maml": "runs/reproduce_maml", "anil": "runs/reproduce_anil", "locomotion": "results/locomotion",
         "outer": "results/outer", "depth": "results/depth", "metaworld": "results/metaworld",
         "anil2019": "results/anil2019", "cavia": "results/cavia", "rules": "results/rules", "rl2": "results/rl2"}

LOCOMOTION = ("HalfCheetahDir", "HalfCheetahVel")
# further families the locomotion campaign takes (``--families AntDir``), reported once they have runs
LOCOMOTION_MORE = ("AntDir", "AntVel")
LOCOMOTION_METHODS = ("maml", "anil")
# the campaign's protocol on every family: horizon 100, as pytorch-maml-rl's configs for HalfCheetah and Ant
# (``max_episode_steps: 100``); the HalfCheetah configs already say so, the Ant configs keep the MAML paper's 200
LOCOMOTION_SET = ["env.horizon=100"]
LOCOMOTION_ROOT = ROOT / "results" / "locomotion"
METAWORLD = {"ML1-reach": "metaworld_ml1_reach.yaml", "ML10": "metaworld_ml10.yaml"}
# TRPO's Fisher-vector products on a subsample of the batch (Schulman et al. 2015 use 10% of the data)
METAWORLD_SET = ["trpo.cg_subsample=0.3"]
ANIL2019_CONFIGS = CONFIGS / "anil2019"
# the 2019-setup campaign: HalfCheetahDir on three seeds first, then HalfCheetahVel on one
ANIL2019 = {"HalfCheetahDir": (1, 2, 3), "HalfCheetahVel": (1,)}
# the ablation: HalfCheetahDir under the 2019 setup with one setting at the locomotion campaign's value
# (experiments/configs/halfcheetah_dir.yaml), ANIL on seed 1 (``reproduce.py anil2019 --ablate NAME``, runs under
# ``results/anil2019/ablation/NAME/``); ``action_scale`` first: the locomotion campaign's ANIL runs turned around
# only where the head's step was large (RESULTS.md), and actions x0.1 make the same step ten times smaller on the
# actuators
ANIL2019_ABLATIONS = {
    "action_scale": ["env.kwargs.action_scale=0.1"],
    "activation": ["policy.activation=tanh"],
    "width": ["policy.hidden_sizes=[64,64]"],
    "horizon": ["env.horizon=100"],
}
ANIL2019_ABLATION = ("HalfCheetahDir", (1,), ("anil",))  # family, seeds, methods
# CAVIA beside MAML and ANIL (and NIL, every run's step 0): Navigation2D on three seeds at the budget, then
# HalfCheetahVel on one seed at 500 iterations beside the locomotion campaign's MAML and ANIL runs (the same
# config, horizon 100); CAVIA's runs use experiments/configs/cavia/ (its RL code's policy and inner lr)
CAVIA_CONFIGS = CONFIGS / "cavia"
CAVIA = {"Navigation2D": ((1, 2, 3), ("maml", "anil", "cavia")), "HalfCheetahVel": ((1,), ("cavia",))}
CAVIA_LONG = {"HalfCheetahVel": 500}
# the inner-update rules side by side on Navigation2D (returns after 0..5 inner steps): MAML-TRPO with each
# rule, and BLUR's genome found by CMA-ES from the same seed's MAML policy
RULES = ("maml", "meta_sgd", "kronecker", "lstm", "blur", "blur_cma")
RULES_STEPS = 5
RULES_SEEDS = (1, 2, 3)
# then HalfCheetahVel, one seed at 300 iterations: MAML against the two learned rules with the best return after
# one inner step on Navigation2D, chosen among the rules the meta-gradient trains (blur_cma is the blur rule under
# another outer loop, whose population would multiply HalfCheetahVel's sampling by es.population)
RULES_LONG = {"HalfCheetahVel": ((1,), 300)}
RULES_CANDIDATES = ("meta_sgd", "kronecker", "lstm", "blur")
# the depth sweep: MAML at every depth, the learned inner updates at the shallow ones
DEPTH_METHODS = {"maml": "MAML", "kronecker": "MAML + Kronecker preconditioner", "meta_sgd": "Meta-SGD"}


def run_name(family: str, method: str, seed: int) -> str:
    """A campaign run's directory name: ``<family>__<method>__<seed>``."""
    return f"{family}__{method}__{seed}"


def depth_run_name(method: str, depth: int, seed: int) -> str:
    """The depth sweep's run directory name for one cell."""
    return run_name("Navigation2D", f"{method}_d{depth}", seed)


def config_for(family: str, method: str, seed: int, iterations: int, extra: list[str], configs: Path = CONFIGS):
    """The config of one campaign run: the family's config file, the method's overrides, then ``extra``."""
    from metarl.config import load_config

    overrides = [f"iterations={iterations}", f"seed={seed}", f"name={method}"] + METHODS[method] + extra
    if method == "random":
        overrides = [o for o in overrides if not o.startswith("iterations=")] + ["iterations=0"]
    return load_config(configs / FAMILY_CONFIGS[family], overrides)


def cavia_config(family: str, method: str, seed: int, iterations: int, extra: list[str]) -> Any:
    """One run of the CAVIA campaign: CAVIA from its own config, MAML and ANIL from the family's."""
    return config_for(family, method, seed, iterations, extra, CAVIA_CONFIGS if method == "cavia" else CONFIGS)


def rules_config(method: str, seed: int, iterations: int, extra: list[str], root: Path,
                 family: str = "Navigation2D") -> Any:
    """One run of the rules comparison (Navigation2D, or HalfCheetahVel for the best rules); ``blur_cma``
    starts from the same seed's MAML run under ``root`` (its policy fixed, the genome searched)."""
    more = [f"es.init_from={root / run_name(family, 'maml', seed)}"] if method == "blur_cma" else []
    return config_for(family, method, seed, iterations, extra + more)


def depth_config(method: str, depth: int, seed: int, iterations: int, width: int, extra: list[str]):
    """One cell of the depth sweep; the sweep's own overrides (architecture, inner update) come after ``extra``."""
    from metarl.config import load_config

    overrides = [f"iterations={iterations}", f"seed={seed}", f"name={method}_d{depth}", *extra,
                 f"policy.hidden_sizes={[width] * depth}", f"algo.inner_update={INNER_UPDATES[method]}",
                 "algo.learn_inner_lr=false"]
    return load_config(CONFIGS / FAMILY_CONFIGS["Navigation2D"], overrides)


def metaworld_config(bench: str, seed: int, iterations: int, extra: list[str]) -> Any:
    """One Meta-World run: MAML-TRPO on ``bench`` with the subsampled curvature, then ``extra``."""
    from metarl.config import load_config

    return load_config(CONFIGS / METAWORLD[bench], [f"iterations={iterations}", f"seed={seed}", "name=maml"]
                       + METAWORLD_SET + extra)


# RL² (Duan et al. 2016; experiments/configs/rl2/) beside the gradient methods: Navigation2D on three seeds and
# HalfCheetahVel on one, then Meta-World ML1 reach on one (``--benchmark``, by default). Each RL² config takes the
# same environment steps per meta-iteration as the committed MAML-TRPO runs of its family (RL2_MATCH, asserted
# in tests/test_campaign_rl2.py): tasks x episodes x horizon x (inner steps + 1) for MAML, tasks x trials x
# episodes per trial x horizon for RL²; the report compares them by environment steps as well as iterations.
RL2_CONFIGS = CONFIGS / "rl2"
RL2_FILES = {"Navigation2D": "navigation2d.yaml", "HalfCheetahVel": "halfcheetah_vel.yaml",
             "ML1-reach": "metaworld_ml1_reach.yaml"}
RL2 = {"Navigation2D": (1, 2, 3), "HalfCheetahVel": (1,)}
RL2_BENCHMARKS = {"ML1-reach": (1,)}
# Meta-iterations per run. Navigation2D: 150 iterations at the measured NAV_RL2_SECONDS per iteration is ~14 min
# a run on this machine; HalfCheetahVel as the locomotion campaign's MAML and ANIL runs (500), ML1 reach as the
# committed MAML run (100). Unequal budgets compare by environment steps (RESULTS.md's curves).
# Measured 2026-12-07 on the 2-core machine beside two niced training campaigns (load ~6):
#   nice -n 5 metarl train experiments/configs/rl2/navigation2d.yaml --run-dir /tmp/t --set iterations=4 --no-progress
# time/iteration_s 5.88, 5.45, 5.02, 5.38 (median 5.41 s: 0.46 s sampling, 4.96 s the PPO step).
# Measured the same way (3 and 2 iterations): HalfCheetahVel 24.4 s (12.6 s sampling, 11.1 s PPO), so 500
# iterations ~3.4 h; ML1 reach 121-175 s (81-114 s sampling Meta-World), so 100 iterations ~3.4-4.9 h.
NAV_RL2_SECONDS = 5.41
RL2_BUDGETS = {"Navigation2D": 150, "HalfCheetahVel": 500, "ML1-reach": 100}
# the MAML-TRPO runs whose budget per meta-iteration RL² matches: their config file and overrides, as the
# campaigns that trained them (depth/cavia: navigation2d.yaml; locomotion: LOCOMOTION_SET; metaworld)
RL2_MATCH = {"Navigation2D": ("navigation2d.yaml", []), "HalfCheetahVel": ("halfcheetah_vel.yaml", LOCOMOTION_SET),
             "ML1-reach": (METAWORLD["ML1-reach"], METAWORLD_SET)}
# RL² is evaluated on trials of this many episodes (episode 1..4, the hidden state carried across all four) so
# that its curve has a point beside each of the gradient methods' 0..3 inner steps; it trains on trials of
# rl2.episodes_per_trial (2 on Navigation2D and HalfCheetahVel)
RL2_EVAL_EPISODES = 4


def env_steps_per_iteration(cfg: Any) -> int:
    """Environment steps one meta-iteration of ``cfg`` samples (at most: episodes that end early take fewer):
    tasks x episodes x horizon x (inner steps + 1) for the gradient methods (one batch without inner steps),
    tasks x trials x episodes per trial x horizon for RL²."""
    a = cfg.algo
    if a.name == "rl2":
        return a.meta_batch_size * a.episodes_per_task * cfg.rl2.episodes_per_trial * cfg.env.horizon
    return a.meta_batch_size * a.episodes_per_task * cfg.env.horizon * (a.inner_steps + 1)


def rl2_match_config(family: str) -> Any:
    """The config of the committed MAML-TRPO runs whose environment steps per meta-iteration RL² matches."""
    from metarl.config import load_config

    name, sets = RL2_MATCH[family]
    return load_config(CONFIGS / name, list(sets))


def rl2_config(family: str, seed: int, iterations: int, extra: list[str]) -> Any:
    """One RL² run of the campaign: ``experiments/configs/rl2/<family>``, then ``extra``."""
    from metarl.config import load_config

    return load_config(RL2_CONFIGS / RL2_FILES[family], [f"iterations={iterations}", f"seed={seed}", "name=rl2"]
                       + extra)


# `reproduce.py all`: the released campaigns' remaining work as one queue, one command at a time (two campaigns
# side by side on a 2-core machine each ran at well under half their speed alone: docs/guides/reproduce.md).
# Shortest open issue first: RL² (with CAVIA on HalfCheetahVel, its comparison's missing row), the rules'
# HalfCheetahVel stage, then the feature-reuse campaign in the order it asks for (the 2019-setup HalfCheetahDir
# runs, AntDir MAML, the ablation, the 2019 HalfCheetahVel runs), and AntDir ANIL last. Each command skips
# finished runs and resumes interrupted ones, so the queue continues wherever it was stopped.
CONTINUE = (
    ("rl2",),
    ("cavia", "--families", "HalfCheetahVel"),
    ("rules",),
    ("anil2019", "--families", "HalfCheetahDir"),
    ("locomotion", "--families", "AntDir", "--methods", "maml"),
    ("anil2019", "--ablate", "action_scale"),
    ("anil2019", "--families", "HalfCheetahVel"),
    ("locomotion", "--families", "AntDir", "--methods", "anil"),
)
