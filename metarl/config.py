"""Experiment configuration: dataclasses, YAML loading, ``--set`` overrides, validation.

Every key has a default.  ``load_config(path, overrides)`` reads a YAML file
(``yaml.safe_load``), applies dotted ``key=value`` overrides and validates
everything; any problem raises :class:`ConfigError` with one line naming the
key and the value.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from metarl import inputs
from metarl.adaptation import ADAPT_MODES
from metarl.algos import ALGOS
from metarl.algos.base import resolve_inner_update
from metarl.algos.maml_trpo import TRPOSettings
from metarl.algos.proximal import ProximalSettings


class ConfigError(ValueError):
    """A bad config file, key or value (the message names it)."""


@dataclass
class EnvConfig:
    family: str = "Navigation2D"
    """Registered task family (``metarl tasks`` lists them)."""
    horizon: int | None = None
    """Steps per episode; ``null`` takes the family's default."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Family constructor arguments: reward coefficients, task ranges."""
    oracle: bool = False
    """Append each task's parameters to the observations (the oracle baseline)."""


@dataclass
class PolicyConfig:
    hidden_sizes: list[int] = field(default_factory=lambda: [64, 64])
    """Widths of the body's hidden layers."""
    activation: str = "tanh"
    """tanh | relu."""
    adapt: str = "all"
    """Parameters adapted in the inner loop: all (MAML) | head (ANIL) | head_log_std (ANIL with the log-std)."""
    init_log_std: float = 0.0
    """Initial log standard deviation of the Gaussian policy."""
    context_size: int = 2
    """CAVIA's context parameters appended to the policy's input (adapt: context only; 2 as in CAVIA's RL code)."""


@dataclass
class AlgoConfig:
    name: str = "maml_trpo"
    """Outer-loop algorithm, a key of ``metarl.algos.ALGOS``: maml_trpo | promp | maml_ppo."""
    meta_batch_size: int = 20
    """Tasks per meta-iteration."""
    episodes_per_task: int = 20
    """Episodes per task, for each of the train and valid batches."""
    inner_lr: float = 0.1
    """Inner-loop step size (the initial value when learn_inner_lr)."""
    learn_inner_lr: bool = False
    """Meta-SGD: meta-learn one step size per adapted parameter entry (the same as inner_update: meta_sgd)."""
    inner_update: str = "sgd"
    """Inner-update rule: sgd (W - lr g) | meta_sgd (learned per-entry steps) | kronecker
    (W - lr L g R, learned L, R per weight matrix, a learned diagonal for vectors)."""
    inner_steps: int = 1
    """Inner-loop gradient steps."""
    first_order: bool = False
    """Drop second-order terms of the meta-gradient."""
    gamma: float = 0.99
    """Discount."""
    gae_lambda: float = 1.0
    """GAE lambda."""
    normalize_advantages: bool = True
    """Standardise advantages per task."""


@dataclass
class TRPOConfig(TRPOSettings):
    """MAML-TRPO's settings (:class:`metarl.algos.maml_trpo.TRPOSettings`) and the trainer's rejection limit."""

    max_consecutive_rejections: int = 5
    """Stop (with a checkpoint) after this many updates in a row rejected for non-finite values."""


@dataclass
class ProximalConfig(ProximalSettings):
    """ProMP's and MAML-PPO's settings (:class:`metarl.algos.proximal.ProximalSettings`)."""


@dataclass
class SamplerConfig:
    backend: str = "local"
    """local (worker processes, the default) | ray (actors, for clusters) | serial (in-process, for debugging)."""
    workers: int | None = None
    """Worker processes (local) or actors (ray); null: one per core (local) or per cluster CPU (ray)."""
    ray_address: str | None = None
    """Existing Ray cluster to join (HOST:PORT); null starts a local one."""
    hang_timeout: float | None = 300.0
    """Seconds a ready worker may take for one shard before it is killed and replaced (local); null: no limit."""


@dataclass
class LogConfig:
    checkpoint_every: int = 10
    """Write a checkpoint every N iterations (and at the end)."""
    root: str = "runs"
    """Directory holding run directories."""
    wandb: bool = False
    """Mirror the TensorBoard scalars to Weights & Biases (``sync_tensorboard``); needs ``pip install wandb``."""
    wandb_project: str = "metarl"
    """Weights & Biases project of the mirrored runs."""
    wandb_mode: str = "offline"
    """offline (written under RUN_DIR/wandb, upload later with ``wandb sync``) | online (needs ``wandb login``)."""


@dataclass
class Config:
    name: str = "maml_trpo"
    """Experiment name (part of the run directory's name)."""
    env: EnvConfig = field(default_factory=EnvConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    trpo: TRPOConfig = field(default_factory=TRPOConfig)
    proximal: ProximalConfig = field(default_factory=ProximalConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    iterations: int = 100
    """Meta-iterations."""
    seed: int = 1
    """Seed of the policy initialisation, task sampling and rollouts."""
    log: LogConfig = field(default_factory=LogConfig)


# -- parsing -----------------------------------------------------------------------

def _fmt(value: Any) -> str:
    return inputs.short_repr(value)


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check / convert ``value`` against the annotation ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {_fmt(value)}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {_fmt(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {_fmt(value)}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {_fmt(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {_fmt(value)}")
        return value
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {_fmt(value)}")
        return [_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {_fmt(value)}")
        return dict(value)
    raise ConfigError(f"{key}: unsupported type {tp}")  # pragma: no cover - programming error


def _build(cls: type, data: Any, prefix: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix[:-1] or 'config'}: expected a section (a mapping of keys), got {_fmt(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
            raise ConfigError(f"unknown key {full}{hint}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, f"{full}.")
        else:
            kwargs[key] = _convert(value, tp, full)
    return cls(**kwargs)


def _parse_scalar(text: str) -> Any:
    try:
        return inputs.load_yaml(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` strings (values parsed as YAML scalars) to a nested dict."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        node = data
        parts = key.split(".")
        if not all(parts):
            raise ConfigError(f"--set {key}: empty key name between dots")
        for part in parts[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {key}: {part} is not a section")
            node = nxt
        try:
            node[parts[-1]] = _parse_scalar(text)
        except ValueError as e:
            raise ConfigError(f"--set {key}: {e}") from None
    return data


def validate(cfg: Config) -> Config:
    """Range checks that types alone cannot express."""
    def need(ok: bool, key: str, value: Any, what: str) -> None:
        if not ok:
            raise ConfigError(f"{key}: {what}, got {_fmt(value)}")

    a, t, p, s = cfg.algo, cfg.trpo, cfg.policy, cfg.sampler
    need(cfg.iterations >= 0, "iterations", cfg.iterations, "must be >= 0")
    need(0 <= cfg.seed < 2**64, "seed", cfg.seed, "must be in [0, 2**64)")
    need(bool(cfg.name) and "/" not in cfg.name, "name", cfg.name, "must be a non-empty name without '/'")
    need(cfg.env.horizon is None or cfg.env.horizon >= 1, "env.horizon", cfg.env.horizon, "must be >= 1")
    need(len(p.hidden_sizes) >= 1 and all(h >= 1 for h in p.hidden_sizes), "policy.hidden_sizes",
         p.hidden_sizes, "must be a non-empty list of positive widths")
    need(p.activation in ("tanh", "relu"), "policy.activation", p.activation, "must be tanh or relu")
    need(p.adapt in ADAPT_MODES, "policy.adapt", p.adapt,
         "must be one of " + ", ".join(f"{k} ({v})" for k, v in ADAPT_MODES.items()))
    need(1 <= p.context_size <= MAX_WIDTH, "policy.context_size", p.context_size, f"must be in [1, {MAX_WIDTH}]")
    need(a.meta_batch_size >= 1, "algo.meta_batch_size", a.meta_batch_size, "must be >= 1")
    need(a.episodes_per_task >= 1, "algo.episodes_per_task", a.episodes_per_task, "must be >= 1")
    need(a.inner_lr > 0, "algo.inner_lr", a.inner_lr, "must be > 0")
    need(a.inner_steps >= 0, "algo.inner_steps", a.inner_steps, "must be >= 0")
    need(0 < a.gamma <= 1, "algo.gamma", a.gamma, "must be in (0, 1]")
    try:  # the two spellings of Meta-SGD agree from here on
        a.inner_update = resolve_inner_update(a.inner_update, a.learn_inner_lr)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    a.learn_inner_lr = a.inner_update == "meta_sgd"
    need(0 <= a.gae_lambda <= 1, "algo.gae_lambda", a.gae_lambda, "must be in [0, 1]")
    need(t.max_kl > 0, "trpo.max_kl", t.max_kl, "must be > 0")
    need(t.cg_iters >= 1, "trpo.cg_iters", t.cg_iters, "must be >= 1")
    need(t.cg_damping >= 0, "trpo.cg_damping", t.cg_damping, "must be >= 0")
    need(0 < t.cg_subsample <= 1, "trpo.cg_subsample", t.cg_subsample, "must be in (0, 1]")
    need(t.curvature in ("gauss_newton", "double_backward"), "trpo.curvature", t.curvature,
         "must be gauss_newton or double_backward")
    need(t.hvp_chunk_tasks >= 1, "trpo.hvp_chunk_tasks", t.hvp_chunk_tasks, "must be >= 1")
    need(0 < t.ls_backtrack < 1, "trpo.ls_backtrack", t.ls_backtrack, "must be in (0, 1)")
    need(t.ls_max_steps >= 1, "trpo.ls_max_steps", t.ls_max_steps, "must be >= 1")
    need(t.max_consecutive_rejections >= 1, "trpo.max_consecutive_rejections", t.max_consecutive_rejections,
         "must be >= 1")
    x = cfg.proximal
    need(x.lr > 0, "proximal.lr", x.lr, "must be > 0")
    need(x.epochs >= 1, "proximal.epochs", x.epochs, "must be >= 1")
    need(x.clip_eps > 0, "proximal.clip_eps", x.clip_eps, "must be > 0")
    need(x.kl_coef >= 0, "proximal.kl_coef", x.kl_coef, "must be >= 0")
    need(x.target_kl > 0, "proximal.target_kl", x.target_kl, "must be > 0")
    need(0 <= x.adam_beta1 < 1, "proximal.adam_beta1", x.adam_beta1, "must be in [0, 1)")
    need(0 <= x.adam_beta2 < 1, "proximal.adam_beta2", x.adam_beta2, "must be in [0, 1)")
    need(x.adam_eps > 0, "proximal.adam_eps", x.adam_eps, "must be > 0")
    need(s.workers is None or s.workers >= 1, "sampler.workers", s.workers, "must be >= 1 (or null: one per core)")
    need(s.hang_timeout is None or s.hang_timeout > 0, "sampler.hang_timeout", s.hang_timeout,
         "must be > 0 (or null: no limit)")
    _check_sizes(cfg, need)
    need(cfg.log.checkpoint_every >= 1, "log.checkpoint_every", cfg.log.checkpoint_every, "must be >= 1")
    need(cfg.log.wandb_mode in WANDB_MODES, "log.wandb_mode", cfg.log.wandb_mode,
         f"must be one of {_choices(WANDB_MODES)}")
    need(bool(cfg.log.wandb_project.strip()), "log.wandb_project", cfg.log.wandb_project, "must not be empty")
    import envs  # registers families
    from metarl.sampling import BACKENDS

    need(s.backend in BACKENDS, "sampler.backend", s.backend, f"must be one of {_choices(BACKENDS)}")
    need(a.name in ALGOS, "algo.name", a.name, f"must be one of {_choices(ALGOS)}")

    if cfg.env.family not in envs.family_names():
        close = difflib.get_close_matches(cfg.env.family, envs.family_names(), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"env.family: unknown family {_fmt(cfg.env.family)}{hint}")
    limit = getattr(envs.family_class(cfg.env.family), "max_horizon", None)
    if limit is not None and cfg.env.horizon is not None:
        need(cfg.env.horizon <= limit, "env.horizon", cfg.env.horizon,
             f"must be <= {limit}, the longest episode {cfg.env.family} allows")
    try:
        inputs.check_env_kwargs(envs.family_class(cfg.env.family), cfg.env.kwargs, cfg.env.family)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return cfg


MAX_HORIZON = 100_000
MAX_WIDTH = 16_384
MAX_LAYERS = 32
MAX_BATCH_STEPS = 50_000_000
MAX_WEIGHTS = 50_000_000
MAX_REMOTE_WORKERS = 4096
WANDB_MODES = {"offline": None, "online": None}


def max_local_workers() -> int:
    """Local worker processes allowed: 8 per core, and at most half the process limit (RLIMIT_NPROC)."""
    import resource

    from metarl.sampling.local import default_workers

    limit = 8 * default_workers()
    soft, _ = resource.getrlimit(resource.RLIMIT_NPROC)
    if soft != resource.RLIM_INFINITY:
        limit = min(limit, max(1, soft // 2))
    return limit


def _check_sizes(cfg: Config, need: Any) -> None:
    """Upper bounds on sizes that would otherwise exhaust memory or processes."""
    h, p, a, s = cfg.env.horizon, cfg.policy, cfg.algo, cfg.sampler
    need(h is None or h <= MAX_HORIZON, "env.horizon", h, f"must be <= {MAX_HORIZON}")
    need(len(p.hidden_sizes) <= MAX_LAYERS and all(w <= MAX_WIDTH for w in p.hidden_sizes), "policy.hidden_sizes",
         p.hidden_sizes, f"must have at most {MAX_LAYERS} layers of width <= {MAX_WIDTH}")
    weights = sum(x * y for x, y in zip(p.hidden_sizes, p.hidden_sizes[1:]))
    need(weights <= MAX_WEIGHTS, "policy.hidden_sizes", p.hidden_sizes,
         f"must have at most {MAX_WEIGHTS} weights between hidden layers")
    steps = a.meta_batch_size * a.episodes_per_task * (h or 1)
    need(steps <= MAX_BATCH_STEPS, "algo.meta_batch_size", a.meta_batch_size,
         f"times algo.episodes_per_task times env.horizon ({steps} steps per batch) must be <= {MAX_BATCH_STEPS}")
    if s.workers is not None and s.backend == "local":
        top = max_local_workers()
        need(s.workers <= top, "sampler.workers", s.workers,
             f"must be <= {top} on this machine (8 per core, half the process limit)")
    elif s.workers is not None:
        need(s.workers <= MAX_REMOTE_WORKERS, "sampler.workers", s.workers, f"must be <= {MAX_REMOTE_WORKERS}")


def _choices(registry: dict[str, Any]) -> str:
    names = sorted(registry)
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]


def from_dict(data: dict[str, Any]) -> Config:
    return validate(_build(Config, data, ""))


def load_config(path: str | os.PathLike[str] | None, overrides: list[str] | None = None) -> Config:
    """Read ``path`` (or the defaults if None), apply ``overrides``, validate."""
    data: Any = {}
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read(inputs.MAX_CONFIG_BYTES + 1)
            if len(text) > inputs.MAX_CONFIG_BYTES:
                raise ConfigError(f"config file is larger than {inputs.MAX_CONFIG_BYTES} bytes: {path}")
            data = inputs.load_yaml(text)
        except UnicodeDecodeError:
            raise ConfigError(f"config file is not UTF-8 text: {path}") from None
        except ValueError as e:
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(f"{path}: {e}") from None
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except IsADirectoryError:
            raise ConfigError(f"config path is a directory: {path}") from None
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"malformed YAML in {path}{where}") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys, got {_fmt(data)}")
    data = apply_overrides(data, list(overrides or []))
    try:
        inputs.check_tree(data, str(path) if path is not None else "config")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return from_dict(data)


def flat_dict(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of dotted keys (``{"algo": {"gamma": 0.99}} -> {"algo.gamma": 0.99}``).

    Empty mappings stay values (``env.kwargs: {}``).
    """
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping) and v:
            out.update(flat_dict(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
