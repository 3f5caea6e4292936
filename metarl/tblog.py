"""What a run writes to TensorBoard besides its scalars' values: descriptions, a layout, hparams, constants.

* :data:`TAGS`: every scalar tag (``*`` for any name) and what it means.  The
  first event of each tag carries its meaning as the summary's
  ``summary_description`` (TensorBoard shows it beside the chart), and
  ``docs/reference/tensorboard.md`` is generated from the same table.
* :data:`LAYOUT`: the custom-scalars layout written with each run (the
  "Custom Scalars" tab): returns before and after adaptation on one chart,
  the gain, and where an iteration's time goes.
* :func:`write_hparams`: the config's keys as hparams (the selected
  components' sections only, :func:`metarl.config.to_dict`), booleans as
  booleans and strings as strings.
* :data:`CONSTANT_TAGS`: scalars that cannot change during a run; they are
  written once, as a text table (``constants``), not as a series.
* :func:`adaptation_table`: an evaluation curve (return per inner step) as a
  markdown table, logged as text at the checkpoint's iteration.

Every function takes the run's ``SummaryWriter`` (``torch.utils.tensorboard``).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence
from typing import Any

TAGS: dict[str, list[tuple[str, str]]] = {
    "returns": [
        ("returns/pre_adapt", "mean return of the meta-policy's (train) episodes, before adaptation"),
        ("returns/post_adapt", "mean return of the adapted policies' (valid) episodes"),
        ("returns/post_minus_pre", "post_adapt − pre_adapt: what the inner loop gains"),
        ("returns/success_pre", "families that report success (Meta-World): fraction of train episodes with "
                                "success at any step"),
        ("returns/success_post", "the same for the valid episodes"),
    ],
    "trpo (algo.name: maml_trpo)": [
        ("trpo/kl", "mean KL between the adapted policies before and after the outer step"),
        ("trpo/surrogate_before", "post-adaptation surrogate before the outer step"),
        ("trpo/surrogate_after", "post-adaptation surrogate after the outer step"),
        ("trpo/line_search_steps", "backtracking steps the line search took"),
        ("trpo/accepted", "1 if the line search accepted a step"),
        ("trpo/grad_norm", "norm of the meta-gradient"),
        ("trpo/rejected_steps", "updates refused for non-finite values so far"),
    ],
    "promp, ppo (algo.name: promp | maml_ppo)": [
        ("promp/*", "ProMP's outer step: loss_before, loss_after, surrogate_before, surrogate_after, kl_pre, "
                    "kl_post, kl_coef, clip_fraction, grad_norm, rejected_steps"),
        ("ppo/*", "MAML-PPO's outer step: the same without kl_coef"),
    ],
    "rl2 (algo.name: rl2)": [
        ("rl2/return_episode_*", "mean return of the trials' k-th episode (k = 1..rl2.episodes_per_trial): "
                                 "RL²'s adaptation within a trial"),
        ("rl2/*", "RL²'s PPO step on whole trials: loss_before, loss_after, grad_norm, clip_fraction, kl, "
                  "rejected_steps"),
    ],
    "es (algo.name: es)": [
        ("es/fitness_*", "candidates' fitness (mean post-adaptation return): fitness_mean, fitness_max, fitness_min"),
        ("es/failed_candidates", "candidates whose rollouts failed or were non-finite (given the worst fitness)"),
        ("es/sigma", "CMA-ES's step size"),
        ("es/grad_stderr_norm", "OpenES: norm of the standard error of its gradient estimate"),
        ("es/rejected_steps", "updates refused so far (non-finite episodes, or every candidate failed)"),
    ],
    "inner loop": [
        ("adapt/step_norm", "L2 norm of the inner update θ′ − θ over the adapted parameters, mean over tasks"),
        ("policy/log_std_mean", "the meta-policy's mean log-std at the iteration's start"),
        ("meta_sgd/lr_mean", "Meta-SGD: mean of the learned step sizes"),
        ("meta_sgd/lr_std", "Meta-SGD: their standard deviation"),
        ("kronecker/max_dev_from_identity", "Kronecker preconditioner: largest deviation of a factor from the "
                                            "identity"),
        ("lr/*", "learned inner step sizes per parameter"),
        ("lstm/out_weight_norm", "LSTM optimizer: norm of its output weights (0: still the plain step)"),
        ("blur/genome_distance", "BLUR: the genome's distance from the gradient genome (0: the plain step)"),
    ],
    "time": [
        ("time/iteration_s", "seconds of the whole iteration"),
        ("time/sampling_s", "seconds spent sampling (train and valid)"),
        ("time/inner_s", "seconds of the inner loop"),
        ("time/outer_s", "seconds of the outer step"),
        ("time/cg_s", "seconds of the conjugate gradient (TRPO)"),
        ("time/line_search_s", "seconds of the line search (TRPO)"),
        ("time/env_steps_per_s", "environment steps sampled per second"),
    ],
    "sampler and tasks": [
        ("sampler/utilisation_w*", "fraction of the last call worker i spent rolling out"),
        ("sampler/worker_restarts", "workers replaced so far"),
        ("sampler/workers", "number of workers (a constant: the constants text, once; scalars.csv's column)"),
        ("sampler/last_call_s", "seconds of the last sampling call"),
        ("tasks/count", "tasks per meta-batch (a constant: the constants text, once; scalars.csv's column)"),
        ("tasks/steps_per_episode", "mean steps per episode (the horizon unless episodes end early)"),
    ],
    "evaluation (metarl evaluate)": [
        ("eval/*_success", "a protocol's success rate at the checkpoint's iteration (e.g. eval/metaworld_success)"),
        ("eval/*_success_stderr", "its standard error over test tasks"),
        ("eval/*_return_post", "the protocol's return after adaptation"),
    ],
}
"""Every scalar tag a run or an evaluation logs, by group: ``(tag or fnmatch pattern, meaning)``."""

CONSTANT_TAGS = ("tasks/count", "sampler/workers")
"""Scalars that stay the same through a run: logged once as a text table (``constants``), not as a
series.  (``scalars.csv`` keeps every column.)"""

LAYOUT: dict[str, dict[str, list[Any]]] = {
    "headline": {
        "return before and after adaptation": ["Multiline", ["returns/pre_adapt", "returns/post_adapt"]],
        "gain of the inner loop (post − pre)": ["Multiline", ["returns/post_minus_pre"]],
        "success before and after adaptation": ["Multiline", ["returns/success_pre", "returns/success_post"]],
    },
    "time": {
        "seconds per iteration: where they go": ["Multiline", ["time/iteration_s", "time/sampling_s",
                                                               "time/inner_s", "time/outer_s"]],
        "environment steps per second": ["Multiline", ["time/env_steps_per_s"]],
    },
}
"""The custom-scalars layout (``SummaryWriter.add_custom_scalars``): category -> chart title ->
``["Multiline", [tags]]``; a chart whose tags a run does not log stays empty."""


def description(tag: str) -> str:
    """The meaning of ``tag`` from :data:`TAGS` (the first entry whose pattern matches), or ``""``."""
    for entries in TAGS.values():
        for pattern, meaning in entries:
            if fnmatch.fnmatchcase(tag, pattern):
                return meaning
    return ""


def described_scalar(tag: str, value: float) -> Any:
    """A scalar summary (``simple_value``) whose metadata carries ``tag``'s description."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata

    meta = SummaryMetadata(summary_description=description(tag), display_name=tag)
    return Summary(value=[Summary.Value(tag=tag, simple_value=float(value), metadata=meta)])


class ScalarLog:
    """Writes one iteration's scalars: a tag's first event with its description, the rest as plain values;
    :data:`CONSTANT_TAGS` once, as a text table, and not as a series."""

    def __init__(self, writer: Any):
        self.writer = writer
        self.described: set[str] = set()
        self.constants_logged = False

    def add(self, scalars: Mapping[str, float], step: int) -> None:
        constants = {k: v for k, v in scalars.items() if k in CONSTANT_TAGS}
        if constants and not self.constants_logged:
            rows = "\n".join(f"|{k}|{_number(v)}|{description(k)}|" for k, v in constants.items())
            self.writer.add_text("constants", "|constant|value|meaning|\n|-|-|-|\n" + rows, step)
            self.constants_logged = True
        for tag, value in scalars.items():
            if tag in CONSTANT_TAGS:
                continue
            if tag in self.described:
                self.writer.add_scalar(tag, value, step)
            else:
                self.writer.file_writer.add_summary(described_scalar(tag, value), step)
                self.described.add(tag)


def _number(value: float) -> str:
    return str(int(value)) if math.isfinite(value) and float(value).is_integer() else f"{value:g}"


def write_layout(writer: Any) -> None:
    """The custom-scalars :data:`LAYOUT` (once per run: TensorBoard reads the first)."""
    writer.add_custom_scalars(LAYOUT)


HPARAM_METRICS = ("returns/pre_adapt", "returns/post_adapt", "returns/post_minus_pre")


def hparam_values(flat: Mapping[str, Any]) -> dict[str, bool | float | str]:
    """Flattened config keys as hparam values: numbers, booleans and strings as they are, ``null`` as the
    string ``null``, anything else (lists, mappings) as its text."""
    out: dict[str, bool | float | str] = {}
    for k, v in flat.items():
        if v is None:
            out[k] = "null"
        elif isinstance(v, bool | int | float | str):
            out[k] = v
        else:
            out[k] = str(v)
    return out


def write_hparams(writer: Any, flat: Mapping[str, Any]) -> None:
    """``flat`` (the config's dotted keys, e.g. ``flat_dict(to_dict(cfg))``) as TensorBoard hparams, in the
    run directory itself.

    ``SummaryWriter.add_hparams`` would open a sub-run; writing the three
    hparams summaries with the run's own writer keeps one run per directory,
    so the HParams tab lists every run with its scalars :data:`HPARAM_METRICS`
    (TensorBoard shows each metric's latest value).  torch writes a boolean as
    the number 1.0 or 0.0; here it is rewritten as a boolean (``bool_value``,
    ``DATA_TYPE_BOOL``) before the summaries are written.
    """
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2
    from torch.utils.tensorboard.summary import hparams

    values = hparam_values(flat)
    flags = {k: v for k, v in values.items() if isinstance(v, bool)}
    exp, ssi, sei = hparams(values, {m: float("nan") for m in HPARAM_METRICS})

    def rewrite(summary: Any, fix: Any) -> None:
        plugin = summary.value[0].metadata.plugin_data
        data = plugin_data_pb2.HParamsPluginData.FromString(plugin.content)
        fix(data)
        plugin.content = data.SerializeToString()

    def fix_experiment(data: Any) -> None:
        for info in data.experiment.hparam_infos:
            if info.name in flags:
                info.type = api_pb2.DATA_TYPE_BOOL

    def fix_session(data: Any) -> None:
        for k, v in flags.items():
            data.session_start_info.hparams[k].bool_value = v

    rewrite(exp, fix_experiment)
    rewrite(ssi, fix_session)
    for s in (exp, ssi, sei):
        writer.file_writer.add_summary(s)


def adaptation_table(steps: Sequence[int], mean: Sequence[float], stderr: Sequence[float],
                     num_tasks: Any = None) -> str:
    """An adaptation curve as a markdown table: inner step, mean return on held-out tasks, standard error."""
    head = f"return on {num_tasks} held-out tasks" if num_tasks is not None else "return on held-out tasks"
    rows = "\n".join(f"|{k}|{m:.3f}|{s:.3f}|" for k, m, s in zip(steps, mean, stderr, strict=True))
    return f"|inner steps|{head}|standard error|\n|-|-|-|\n{rows}"
