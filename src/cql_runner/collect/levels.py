"""The five D4RL quality levels, and :func:`collect`, the whole of ``cql-collect``.

- ``random``: uniform actions.
- ``medium`` / ``expert``: the frozen SAC snapshots of :mod:`.behaviour`, sampled (the SAC
  policy's own noise; ``collect.deterministic=true`` uses tanh(mean)).
- ``medium-replay``: SAC's replay buffer up to the medium snapshot (capped at collect.steps).
- ``medium-expert``: the ``medium`` and ``expert`` datasets concatenated (2 · collect.steps).

Each frozen-policy part is collected in batches of ``collect.envs`` seeded episodes in one
SyncVectorEnv until ``collect.steps`` transitions are in; the last episode is cut there and
marked truncated. The same (seed, config) gives the same episodes, bit for bit.
"""

from __future__ import annotations

import logging
import math
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import numpy as np
from gymnasium.envs.registration import EnvSpec
from gymnasium.spaces import Box
from gymnasium.vector import SyncVectorEnv
from omegaconf import OmegaConf

from cql_runner.envs import EnvError, has_discrete_actions, make_env, make_vector_env
from cql_runner.logging.console import ConsoleLogger
from cql_runner.rollout import Episode, Policy, rollout
from cql_runner.torch_threads import torch_threads

from . import behaviour as bhv
from .config import default_dataset_id, validate
from .online_sac import check_box_env
from .policies import actor_policy, numpy_generator, stream_seed, torch_generator, uniform_policy
from .references import choose_references, format_duration, sac_seconds
from .writer import DatasetInfo, check_dataset_id, code_version, write_dataset

log = logging.getLogger(__name__)


def truncate(ep: Episode, steps: int) -> Episode:
    """The first ``steps`` steps of ``ep``, the last one marked truncated if it was cut."""
    if steps >= ep.length:
        return ep
    trunc = ep.truncations[:steps].copy()
    trunc[-1] = True
    return replace(
        ep,
        obs=cast(np.ndarray, ep.obs)[: steps + 1],
        actions=ep.actions[:steps],
        unit_actions=ep.unit_actions[:steps],
        rewards=ep.rewards[:steps],
        terminations=ep.terminations[:steps],
        truncations=trunc,
    )


def collect_episodes(
    vec: SyncVectorEnv, policy: Policy, seed: int, stream: str, steps: int, console: Any = None, run: Any = rollout
) -> list[Episode]:
    """Batches of seeded episodes from ``policy`` until ``steps`` transitions are recorded.

    ``console`` (optional) has ``advance(step)`` and ``total_steps``; ``run`` is the rollout
    function (the discrete one for Discrete-action envs).
    """
    episodes: list[Episode] = []
    total = batch = 0
    while total < steps:
        result = run(vec, policy, [stream_seed(seed, stream, batch)], vec.num_envs, record=True)
        for ep in result.episodes or []:
            if total >= steps:
                break
            ep = truncate(ep, steps - total)
            episodes.append(ep)
            total += ep.length
        batch += 1
        if console is not None:
            console.advance(min(total, console.total_steps))
    return episodes


def level_episodes(cfg: Any, behaviour: bhv.Behaviour | None) -> list[Episode]:
    """The episodes of ``cfg.level`` (a behaviour is needed for every level but random)."""
    level, seed, steps = cfg.level, int(cfg.seed), int(cfg.collect.steps)
    if level == "medium-replay":
        assert behaviour is not None
        replay = behaviour.replay()
        env = make_env(cfg.env, cfg.max_episode_steps)
        space = cast(Box, env.action_space)
        low, high = space.low, space.high
        env.close()
        return replay.episodes(low, high, end=min(replay.size, steps))
    parts = {"medium-expert": ["medium", "expert"]}.get(level, [level])
    total = steps * len(parts)
    console = ConsoleLogger(total, enabled=bool(cfg.progress), keys=())
    vec = make_vector_env(cfg.env, int(cfg.collect.envs), cfg.max_episode_steps)
    episodes: list[Episode] = []
    try:
        for part in parts:
            if part == "random":
                act_dim = cast(Box, vec.single_action_space).shape[0]
                policy = uniform_policy(act_dim, numpy_generator(seed, "random"))
            else:
                assert behaviour is not None
                det = bool(cfg.collect.deterministic)
                policy = actor_policy(behaviour.actor(part), det, torch_generator(seed, part))
            if console.enabled:
                console.write(f"collecting {steps} {part} transitions")
            done = sum(ep.length for ep in episodes)
            part_console = _Offset(console, done)
            episodes += collect_episodes(vec, policy, seed, part, steps, part_console)
    finally:
        console.close()
        vec.close()
    return episodes


class _Offset:
    """Moves a shared progress bar for one part of a multi-part collection; without a
    terminal, prints a plain line at every tenth of the total instead."""

    def __init__(self, console: ConsoleLogger, offset: int) -> None:
        self.console, self.offset = console, offset
        self.total_steps = console.total_steps - offset
        self._tenth = max(1, console.total_steps // 10)
        self._next = (offset // self._tenth + 1) * self._tenth

    def advance(self, step: int) -> None:
        done = self.offset + step
        if self.console.enabled and not self.console.uses_bar and done >= self._next:
            self.console.log({}, done)
            self._next = (done // self._tenth + 1) * self._tenth
        self.console.advance(done)


def _algorithm(level: str) -> str:
    return {
        "random": "cql-runner uniform random policy",
        "medium-replay": "cql-runner SAC replay buffer (up to medium)",
        "medium-expert": "cql-runner SAC (medium + expert)",
    }.get(level, f"cql-runner SAC ({level})")


def timed_spec(cfg: Any, spec: EnvSpec | None) -> EnvSpec:
    """The env's spec, which must carry a time limit: it ends the collected episodes."""
    if spec is None or spec.max_episode_steps is None:
        raise EnvError(f"environment {cfg.env!r} has no time limit; pass max_episode_steps=<steps>")
    return spec


def new_dataset_id(cfg: Any) -> str:
    """The id the dataset will be written under, checked before any work: it must parse and must not
    exist unless ``overwrite``."""
    dataset_id = str(cfg.dataset_id or default_dataset_id(cfg.env, cfg.level))
    check_dataset_id(dataset_id, bool(cfg.overwrite))
    return dataset_id


def collect(cfg: Any) -> str:
    """Build the dataset ``cfg`` asks for; print a summary ending in ``dataset: <id>``."""
    validate(cfg)
    if has_discrete_actions(cfg.env, cfg.max_episode_steps):
        from .discrete_levels import collect_discrete

        return collect_discrete(cfg)
    env = make_env(cfg.env, cfg.max_episode_steps)  # EnvError for unknown ids
    try:
        obs_dim, _, action_high = check_box_env(env, cfg.env)
        spec = env.spec
    finally:
        env.close()
    spec, dataset_id = timed_spec(cfg, spec), new_dataset_id(cfg)
    with torch_threads(cfg.threads):
        ref_min_choice, ref_max_choice = choose_references(cfg)
        needs_sac = cfg.level != "random" or ref_max_choice.value is None
        if cfg.level == "random" and needs_sac and bhv.load(bhv.behaviour_dir(cfg)) is None:
            announce_expert_for_reference(cfg, obs_dim, len(action_high))
        behaviour = bhv.load_or_train(cfg) if needs_sac else None
        returns = dict(behaviour.summary) if behaviour is not None else {}
        ref_min = ref_min_choice.value
        if ref_min is None:
            ref_min = returns.get("random_return")
            ref_min = bhv.random_return(cfg) if ref_min is None else ref_min
        ref_max = ref_max_choice.value if ref_max_choice.value is not None else returns["expert_return"]
        episodes = level_episodes(cfg, behaviour)

    ep_returns = np.array([ep.episode_return for ep in episodes])
    n_steps = int(sum(ep.length for ep in episodes))
    extra = level_metadata(
        cfg,
        ep_returns,
        returns,
        behaviour.dir if behaviour is not None else None,
        timing_key="sac_seconds",
        reference_sources={"ref_min_score": ref_min_choice.source, "ref_max_score": ref_max_choice.source},
    )
    info = DatasetInfo(
        dataset_id,
        spec,
        _algorithm(cfg.level),
        _description(cfg, dataset_id),
        float(ref_min),
        float(ref_max),
        int(cfg.ref_episodes),
        int(cfg.seed),
        extra,
    )
    path = write_dataset(episodes, info, overwrite=bool(cfg.overwrite))

    size = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
    print(f"env: {cfg.env}  level: {cfg.level}  seed: {cfg.seed}")
    if behaviour is not None:
        s = behaviour.summary
        print(
            f"behaviour: {behaviour.dir} (SAC {s['sac']['steps']} steps; medium at step "
            f"{s['medium_step']}, expert at step {s['expert_step']})"
        )
        print(
            f"returns: random {s['random_return']:.1f}  medium {s['medium_return']:.1f}  "
            f"expert {s['expert_return']:.1f}"
        )
    print(f"reference scores: min {ref_min:.1f}  max {ref_max:.1f}")
    print(
        f"data: {len(episodes)} episodes, {n_steps} transitions, mean episode return "
        f"{ep_returns.mean():.1f} (normalized {_score(ep_returns.mean(), ref_min, ref_max):.1f})"
    )
    print(f"written: {path} ({size / 2**20:.1f} MiB)")
    print(f"dataset: {dataset_id}")
    return dataset_id


def announce_expert_for_reference(cfg: Any, obs_dim: int, act_dim: int) -> None:
    """First line of a random dataset that trains SAC only for ref_max_score: what, how long, how to skip."""
    estimate = sac_seconds(obs_dim, act_dim, cfg.sac)
    print(
        f"cql-collect: level=random needs an expert only for the reference score ref_max_score: training "
        f"SAC for sac.steps={cfg.sac.steps} takes at least {format_duration(estimate)} here; pass "
        "ref_max_score=<expert return> to skip it",
        file=sys.stderr,
        flush=True,
    )


def _score(ret: float, lo: float, hi: float) -> float:
    return 100.0 * (ret - lo) / (hi - lo) if hi != lo else math.nan


# The behaviour run's summary entries every dataset's metadata keeps (beside its learner's timing key).
BEHAVIOUR_SUMMARY_KEYS = (
    "random_return",
    "medium_return",
    "expert_return",
    "medium_step",
    "expert_step",
    "threshold",
    "updates_per_second",
)


def level_metadata(
    cfg: Any,
    ep_returns: np.ndarray,
    returns: dict[str, Any],
    behaviour_dir: Path | None,
    *,
    timing_key: str,
    **more: Any,
) -> dict[str, Any]:
    """The dataset metadata's ``extra`` of a level, shared by the continuous and the discrete builder."""
    keep = (*BEHAVIOUR_SUMMARY_KEYS, timing_key)
    return {
        "level": cfg.level,
        "version": code_version(),
        "dataset_mean_return": float(ep_returns.mean()),
        "behaviour": {k: returns[k] for k in keep if k in returns},
        "behaviour_cache": str(behaviour_dir) if behaviour_dir is not None else None,
        **more,
        "config": OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else None,
    }


def _description(cfg: Any, dataset_id: str) -> str:
    s = cfg.sac
    how = "deterministic tanh(mean)" if cfg.collect.deterministic else "sampled (stochastic)"
    return (
        f"D4RL-style '{cfg.level}' dataset {dataset_id} for {cfg.env}, built by cql-collect with "
        f"{code_version()}, seed {cfg.seed}. Behaviour policies: online SAC (the cql-runner CQL "
        f"agent without the conservative term), {s.steps} env steps, hidden {list(s.hidden)}, "
        f"eval every {s.eval_every} steps; expert = best eval snapshot; medium = first snapshot "
        f"reaching random + {cfg.medium_fraction:.3g}*(expert - random). Frozen-policy actions "
        f"are {how}. ref_min_score = mean return of uniform random actions, ref_max_score = "
        f"mean return of the deterministic expert ({cfg.ref_episodes} episodes each) unless "
        f"overridden."
    )
