"""Experiment configuration: dataclasses, YAML loading, ``--set`` overrides, validation.

Every key has a default.  ``load_config(path, overrides)`` reads a YAML file
(``yaml.safe_load``), applies dotted ``key=value`` overrides and validates
everything; any problem raises :class:`ConfigError` with one line naming the
key and the value.

This module holds the run-wide keys only (``name``, ``env``, ``policy``,
``algo``, ``sampler``, ``iterations``, ``seed``, ``log``).  The settings of a
pluggable component live in its own section, assembled from the registries:
an outer loop (:data:`metarl.algos.ALGOS`), an inner-update rule
(:data:`metarl.inner_updates.INNER_UPDATES`) or a sampler backend
(:data:`metarl.sampling.BACKENDS`) with a ``Settings`` dataclass owns the
section ``section`` (its registered name by default): ``--set section.key=v``
reaches it, its ``validate(need)`` checks it, and a run's ``config.yaml``
holds the sections of the selected components.  A component registered by a
``--module`` file is settable the same way.

Old spellings are migrated on load (:data:`MIGRATIONS`): ``algo.learn_inner_lr:
true`` is ``algo.inner_update: meta_sgd``; ``trpo.max_consecutive_rejections``
is ``algo.max_consecutive_rejections``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import stat
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import yaml

from metarl import inputs
from metarl.adaptation import ADAPT_MODES
from metarl.algos import ALGOS
from metarl.algos.base import LearnerSettings, resolve_inner_update, section_name
from metarl.inner_updates import INNER_UPDATES


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
    """Parameters adapted in the inner loop: all (MAML) | head (ANIL) | head_log_std (ANIL with the log-std) |
    context (CAVIA: only `policy.context_size` zero context parameters on the input)."""
    init_log_std: float = 0.0
    """Initial log standard deviation of the Gaussian policy."""
    context_size: int = 2
    """CAVIA's context parameters appended to the policy's input (adapt: context only; 2 as in CAVIA's RL code)."""
    kind: str = "mlp"
    """mlp (a feed-forward Gaussian policy) | gru (RL²'s recurrent policy: the observation, previous action,
    previous reward and done flag through the `hidden_sizes` layers, a GRU of `gru_size`, then the head;
    algo.name: rl2 only)."""
    gru_size: int = 64
    """Width of the GRU's hidden state (kind: gru)."""


@dataclass(kw_only=True)
class AlgoConfig(LearnerSettings):
    """The meta-batch, the outer loop's name and the inner loop's settings (:class:`LearnerSettings`)."""

    name: str = "maml_trpo"
    """Outer-loop algorithm, a key of ``metarl.algos.ALGOS``: maml_trpo | promp | maml_ppo | es | rl2
    (RL², with policy.kind: gru; algo.episodes_per_task then counts trials of rl2.episodes_per_trial episodes)."""
    meta_batch_size: int = 20
    """Tasks per meta-iteration."""
    episodes_per_task: int = 20
    """Episodes per task, for each of the train and valid batches."""
    max_consecutive_rejections: int = 5
    """Stop (with a checkpoint) after this many updates in a row rejected for non-finite values."""

    @property
    def learn_inner_lr(self) -> bool:
        """The old spelling of ``inner_update: meta_sgd`` (read-only)."""
        return self.inner_update == "meta_sgd"


ALGO_ORDER = ("name", "meta_batch_size", "episodes_per_task")
"""The ``algo`` keys written first (the rest in :class:`LearnerSettings`' order)."""


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


@dataclass(eq=False)
class Config:
    name: str = "maml_trpo"
    """Experiment name (part of the run directory's name)."""
    env: EnvConfig = field(default_factory=EnvConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    iterations: int = 100
    """Meta-iterations."""
    seed: int = 1
    """Seed of the policy initialisation, task sampling and rollouts."""
    device: str = "auto"
    """Where the learner runs (inner loop, outer step, baseline fit): auto (CUDA when available, else CPU) | cpu |
    cuda | cuda:N. Workers always sample on CPU; checkpoints hold CPU tensors, so a run evaluates and resumes
    anywhere (a run whose config says cuda resumes on a CPU-only machine once its config.yaml says auto or cpu)."""
    log: LogConfig = field(default_factory=LogConfig)
    sections: dataclasses.InitVar[dict[str, Any] | None] = None
    """Component settings by section name (``trpo``, ``proximal``, a ``--module`` rule's): the selected
    components' and any other one the config names. Read them as attributes: ``cfg.trpo.max_kl``.
    (Not a field: the run-wide keys are the fields.)"""

    def __post_init__(self, sections: dict[str, Any] | None) -> None:
        self.sections = dict(sections or {})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and to_dict(self) == to_dict(other) and self.sections == other.sections

    def __getattr__(self, name: str) -> Any:
        """A component section as an attribute (its defaults if the config does not hold it)."""
        sections = self.__dict__.get("sections")
        if sections is not None:
            if name in sections:
                return sections[name]
            known = component_sections()
            if name in known:
                return known[name]()
        raise AttributeError(f"{type(self).__name__} has no attribute or component section {name!r}")

    def selected_sections(self) -> list[str]:
        """The sections of the components this config selects (outer loop, inner-update rule, backend)."""
        return selected_sections(self.algo.name, self.algo.inner_update, self.sampler.backend)


RUN_WIDE = tuple(f.name for f in dataclasses.fields(Config))
"""The run-wide top-level keys, in the order a config is written."""


def registries() -> dict[str, dict[str, Any]]:
    """The registries whose entries may own a config section, by the key that selects an entry."""
    from metarl.sampling import BACKENDS

    return {"algo.name": ALGOS, "algo.inner_update": INNER_UPDATES, "sampler.backend": BACKENDS}


def component_sections() -> dict[str, type]:
    """Every registered component's section and its ``Settings`` dataclass.

    Two components may share a section (ProMP and MAML-PPO: ``proximal``) only with one ``Settings``."""
    out: dict[str, type] = {}
    for registry in registries().values():
        for name, component in registry.items():
            section = section_name(name, component)
            if section is None:
                continue
            if section in RUN_WIDE:
                raise ConfigError(f"component {name!r} declares section {section!r}, a run-wide key")
            settings = component.Settings
            if out.setdefault(section, settings) is not settings:
                raise ConfigError(f"two components declare section {section!r} with different settings")
    return out


def section_owners() -> dict[str, list[str]]:
    """Each component section and the selections that use it, e.g. ``{"trpo": ["algo.name: maml_trpo"]}``."""
    out: dict[str, list[str]] = {}
    for key, registry in registries().items():
        for name, component in registry.items():
            section = section_name(name, component)
            if section is not None:
                out.setdefault(section, []).append(f"{key}: {name}")
    return out


def section_classes() -> dict[str, type]:
    """Every config section and its dataclass: the run-wide ones (``env``, ``policy``, ``algo``, ``sampler``,
    ``log``), then every registered component's (:func:`component_sections`). The top-level scalars
    (``name``, ``iterations``, ``seed``) are :class:`Config`'s own fields."""
    hints = typing.get_type_hints(Config)
    out = {f.name: hints[f.name] for f in dataclasses.fields(Config) if dataclasses.is_dataclass(hints[f.name])}
    out.update(component_sections())
    return out


def selected_sections(algo: str, inner_update: str, backend: str) -> list[str]:
    """The sections owned by the selected outer loop, inner-update rule and sampler backend (in that order)."""
    out = []
    for registry, name in zip(registries().values(), (algo, inner_update, backend), strict=True):
        section = section_name(name, registry[name]) if name in registry else None
        if section is not None and section not in out:
            out.append(section)
    return out


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


def _check_selectors(data: dict[str, Any]) -> None:
    """An unregistered outer loop, rule or backend is named before its section could be (``--module``)."""
    for key, registry in registries().items():
        section, name = key.split(".")
        value = data.get(section, {}).get(name) if isinstance(data.get(section), dict) else None
        if not isinstance(value, str) or value in registry:
            continue
        if key == "algo.inner_update":
            try:
                resolve_inner_update(value, False)
            except ValueError as e:
                raise ConfigError(str(e)) from None
        raise ConfigError(f"{key}: must be one of {_choices(registry)}, got {_fmt(value)}")


def _build_config(data: Any) -> Config:
    """The top level: run-wide keys through :func:`_build`, component sections through their ``Settings``."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config: expected a section (a mapping of keys), got {_fmt(data)}")
    _check_selectors(data)
    known = component_sections()
    run_wide = {k: v for k, v in data.items() if k in RUN_WIDE}
    sections = {}
    for key, value in data.items():
        if key in RUN_WIDE:
            continue
        if key not in known:
            close = difflib.get_close_matches(str(key), [*RUN_WIDE, *known], n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"unknown key {key}{hint}")
        sections[key] = _build(known[key], value, f"{key}.")
    cfg = _build(Config, run_wide, "")
    for section in cfg.selected_sections():
        sections.setdefault(section, known[section]())
    cfg.sections.update(sections)
    return cfg


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

    a, p, s = cfg.algo, cfg.policy, cfg.sampler
    need(cfg.iterations >= 0, "iterations", cfg.iterations, "must be >= 0")
    need(0 <= cfg.seed < 2**64, "seed", cfg.seed, "must be in [0, 2**64)")
    need(DEVICE_FORM.fullmatch(cfg.device) is not None, "device", cfg.device, "must be auto, cpu, cuda or cuda:N")
    need(bool(cfg.name) and "/" not in cfg.name, "name", cfg.name, "must be a non-empty name without '/'")
    need(cfg.env.horizon is None or cfg.env.horizon >= 1, "env.horizon", cfg.env.horizon, "must be >= 1")
    need(len(p.hidden_sizes) >= 1 and all(h >= 1 for h in p.hidden_sizes), "policy.hidden_sizes",
         p.hidden_sizes, "must be a non-empty list of positive widths")
    need(p.activation in ("tanh", "relu"), "policy.activation", p.activation, "must be tanh or relu")
    need(p.adapt in ADAPT_MODES, "policy.adapt", p.adapt,
         "must be one of " + ", ".join(f"{k} ({v})" for k, v in ADAPT_MODES.items()))
    need(1 <= p.context_size <= MAX_WIDTH, "policy.context_size", p.context_size, f"must be in [1, {MAX_WIDTH}]")
    need(p.kind in POLICY_KINDS, "policy.kind", p.kind, "must be mlp or gru")
    need(1 <= p.gru_size <= MAX_WIDTH, "policy.gru_size", p.gru_size, f"must be in [1, {MAX_WIDTH}]")
    need(a.meta_batch_size >= 1, "algo.meta_batch_size", a.meta_batch_size, "must be >= 1")
    need(a.episodes_per_task >= 1, "algo.episodes_per_task", a.episodes_per_task, "must be >= 1")
    need(a.inner_lr > 0, "algo.inner_lr", a.inner_lr, "must be > 0")
    need(a.inner_lr <= MAX_INNER_LR, "algo.inner_lr", a.inner_lr, f"must be in (0, {MAX_INNER_LR:g}]")
    need(MIN_LOG_STD <= p.init_log_std <= MAX_LOG_STD, "policy.init_log_std", p.init_log_std,
         f"must be in [{MIN_LOG_STD:g}, {MAX_LOG_STD:g}] (a standard deviation exp(x) that stays finite)")
    need(a.inner_steps >= 0, "algo.inner_steps", a.inner_steps, "must be >= 0")
    need(0 < a.gamma <= 1, "algo.gamma", a.gamma, "must be in (0, 1]")
    try:
        resolve_inner_update(a.inner_update, False)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    need(0 <= a.gae_lambda <= 1, "algo.gae_lambda", a.gae_lambda, "must be in [0, 1]")
    need(a.max_consecutive_rejections >= 1, "algo.max_consecutive_rejections", a.max_consecutive_rejections,
         "must be >= 1")
    need(s.workers is None or s.workers >= 1, "sampler.workers", s.workers, "must be >= 1 (or null: one per core)")
    need(s.ray_address is None or valid_ray_address(s.ray_address), "sampler.ray_address", s.ray_address,
         "must be HOST:PORT (a port in 1..65535), ray://HOST:PORT, auto or local (or null: a private local instance)")
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
    kinds = ALGOS[a.name].policy_kinds
    need(p.kind in kinds, "policy.kind", p.kind, f"must be {' or '.join(kinds)} with algo.name: {a.name}")
    for section, settings in cfg.sections.items():  # each component checks its own section
        check = getattr(settings, "validate", None)
        if check is not None:
            check(lambda ok, key, value, what, _s=section: need(ok, f"{_s}.{key}", value, what))
    ALGOS[a.name].check_config(cfg, need)  # the outer loop's checks across sections

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


POLICY_KINDS = ("mlp", "gru")

RAY_ADDRESS = re.compile(r"(ray://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9._-]*):([0-9]{1,5})")


def valid_ray_address(address: str) -> bool:
    """``sampler.ray_address``: ``HOST:PORT`` (a hostname, an IPv4 or a bracketed IPv6 address; a port in
    1..65535), the same after ``ray://`` (Ray Client), ``auto`` or ``local``."""
    if address in ("auto", "local"):
        return True
    m = RAY_ADDRESS.fullmatch(address)
    return m is not None and 1 <= int(m.group(3)) <= 65535


DEVICE_FORM = re.compile(r"auto|cpu|cuda(:[0-9]+)?")
"""The forms of ``device``."""


def resolve_device(spec: str) -> torch.device:
    """The learner's device for ``device: spec``: auto is CUDA (device 0) when torch sees one, else CPU.

    ``cuda`` or ``cuda:N`` on a machine without CUDA (or without device N) is a :class:`ConfigError` (one line),
    raised before anything is written. Only the training path calls this: reading a run's config (evaluation,
    analysis) never needs its device, so a run trained on a GPU evaluates on a CPU-only machine."""
    if DEVICE_FORM.fullmatch(spec) is None:
        raise ConfigError(f"device: must be auto, cpu, cuda or cuda:N, got {_fmt(spec)}")
    if spec == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if spec == "auto":
        return torch.device("cuda", 0) if available else torch.device("cpu")
    if not available:
        raise ConfigError(f"device: {spec} asked for, but torch sees no CUDA device here (use device=auto or cpu)")
    index = int(spec.split(":")[1]) if ":" in spec else 0
    count = torch.cuda.device_count()
    if index >= count:
        raise ConfigError(f"device: {spec} asked for, but torch sees {count} CUDA device(s) here")
    return torch.device("cuda", index)


MAX_HORIZON = 100_000
MAX_WIDTH = 16_384
MAX_LAYERS = 32
MAX_BATCH_STEPS = 50_000_000
MAX_WEIGHTS = 50_000_000
MAX_REMOTE_WORKERS = 4096
MAX_INNER_STEPS = 100
MAX_INNER_LR = 1000.0
"""The largest inner step size (``algo.inner_lr``, ``evaluate --inner-lr``): beyond it a step overflows."""
MIN_LOG_STD, MAX_LOG_STD = -20.0, 5.0
"""The range of ``policy.init_log_std``: exp(1e6) is infinite, and actions with it NaN."""


def _default_horizon(family: str) -> int:
    """The registered horizon of ``family`` (what ``env.horizon: null`` means), or 1 for an unknown one (refused
    later, naming it)."""
    import envs

    return next((h for name, h, _ in envs.describe_families() if name == family), 1)
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
    trial = ALGOS[a.name].episodes_per_trial(cfg) if a.name in ALGOS else 1  # RL²: episodes per trial
    steps = a.meta_batch_size * a.episodes_per_task * trial * (h or _default_horizon(cfg.env.family))
    per = " times rl2.episodes_per_trial" if trial != 1 else ""
    need(steps <= MAX_BATCH_STEPS, "algo.meta_batch_size", a.meta_batch_size,
         f"times algo.episodes_per_task{per} times env.horizon ({steps} steps per batch) must be <= {MAX_BATCH_STEPS}")
    need(a.inner_steps <= MAX_INNER_STEPS, "algo.inner_steps", a.inner_steps, f"must be <= {MAX_INNER_STEPS}")
    need(steps * (a.inner_steps + 1) <= MAX_BATCH_STEPS, "algo.inner_steps", a.inner_steps,
         f"plus 1, times the {steps} steps of each batch, is the steps an iteration samples and must be <= "
         f"{MAX_BATCH_STEPS}")
    if s.workers is not None and s.backend == "local":
        top = max_local_workers()
        need(s.workers <= top, "sampler.workers", s.workers,
             f"must be <= {top} on this machine (8 per core, half the process limit)")
    elif s.workers is not None:
        need(s.workers <= MAX_REMOTE_WORKERS, "sampler.workers", s.workers, f"must be <= {MAX_REMOTE_WORKERS}")


def _choices(registry: dict[str, Any]) -> str:
    names = sorted(registry)
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]


def _migrate_learn_inner_lr(data: dict[str, Any]) -> str:
    algo = data["algo"]
    value = algo.pop("learn_inner_lr")
    if not isinstance(value, bool):
        raise ConfigError(f"algo.learn_inner_lr: expected true or false, got {_fmt(value)}")
    rule = algo.get("inner_update", "sgd")
    if isinstance(rule, str) and rule in INNER_UPDATES:
        try:
            algo["inner_update"] = resolve_inner_update(rule, value)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    return "algo.learn_inner_lr is the old spelling of algo.inner_update: meta_sgd"


def _migrate_rejections(data: dict[str, Any]) -> str:
    value = data["trpo"].pop("max_consecutive_rejections")
    if data.get("algo") is None:
        data["algo"] = {}
    if isinstance(data["algo"], dict):
        data["algo"]["max_consecutive_rejections"] = value
    return "trpo.max_consecutive_rejections is now algo.max_consecutive_rejections (every outer loop stops there)"


MIGRATIONS = {
    "algo.learn_inner_lr": _migrate_learn_inner_lr,
    "trpo.max_consecutive_rejections": _migrate_rejections,
}
"""Old key spellings (dotted) and how each is rewritten into the current keys (returning a one-line note)."""


def migrate(data: dict[str, Any]) -> list[str]:
    """Rewrite the old spellings in ``data`` (in place); returns a note for each one found."""
    notes = []
    for key, rewrite in MIGRATIONS.items():
        section, name = key.split(".")
        if isinstance(data.get(section), dict) and name in data[section]:
            notes.append(rewrite(data))
    return notes


def from_dict(data: dict[str, Any], notes: list[str] | None = None) -> Config:
    """A validated config from nested keys; old spellings are migrated (their notes appended to ``notes``)."""
    found = migrate(data) if isinstance(data, dict) else []
    if notes is not None:
        notes.extend(found)
    return validate(_build_config(data))


def read_yaml_file(path: str | os.PathLike[str]) -> Any:
    """The YAML value in ``path``, read with the bounds of :mod:`metarl.inputs` (a regular file of at most
    ``MAX_CONFIG_BYTES``, UTF-8, no duplicate keys; the tree bounded by :func:`metarl.inputs.check_tree`
    once loaded by :func:`load_config`); every failure is a one-line :class:`ConfigError` naming ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the open
        try:
            mode = os.fstat(fd).st_mode
            if stat.S_ISDIR(mode):
                raise IsADirectoryError(path)
            if not stat.S_ISREG(mode):
                raise ConfigError(f"config path is not a regular file: {path}")
            with os.fdopen(fd, encoding="utf-8") as f:
                fd = -1
                text = f.read(inputs.MAX_CONFIG_BYTES + 1)
        finally:
            if fd >= 0:
                os.close(fd)
        if len(text) > inputs.MAX_CONFIG_BYTES:
            raise ConfigError(f"config file is larger than {inputs.MAX_CONFIG_BYTES} bytes: {path}")
        return inputs.load_yaml(text)
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


def load_config(path: str | os.PathLike[str] | None, overrides: list[str] | None = None,
                notes: list[str] | None = None) -> Config:
    """Read ``path`` (or the defaults if None), apply ``overrides``, validate.

    Old key spellings are migrated (:data:`MIGRATIONS`); with ``notes`` given, a one-line note for each
    one the file or the overrides used is appended to it (the command line prints them)."""
    data: Any = {}
    if path is not None:
        data = read_yaml_file(path)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys, got {_fmt(data)}")
    data = apply_overrides(data, list(overrides or []))
    try:
        inputs.check_tree(data, str(path) if path is not None else "config")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return from_dict(data, notes)


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
    """The config as nested plain values, in the order it is written: the run-wide keys with the selected
    components' sections after ``algo`` (an unselected component's section is not written)."""
    out: dict[str, Any] = {}
    for key in RUN_WIDE:
        value = getattr(cfg, key)
        out[key] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
        if key == "algo":
            algo = out["algo"]
            out["algo"] = {**{k: algo[k] for k in ALGO_ORDER}, **{k: v for k, v in algo.items() if k not in ALGO_ORDER}}
            for section in cfg.selected_sections():
                out[section] = dataclasses.asdict(getattr(cfg, section))
    return out


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
