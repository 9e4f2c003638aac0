"""``cql-collect`` for Discrete-action envs: the five levels from the project's own Double DQN.

The rules are the continuous builder's (see :mod:`.behaviour` and :mod:`.levels`), with online
Double DQN (:mod:`.online_dqn`) in place of SAC:

- ``random``: uniform actions.
- ``medium`` / ``expert``: frozen DQN snapshots acting ε-greedily (``collect.epsilon``;
  ``collect.deterministic=true`` acts greedily). expert = the snapshot with the best greedy
  eval return; medium = the first snapshot whose eval return reaches
  R_random + medium_fraction·(R_expert − R_random).
- ``medium-replay``: DQN's replay buffer up to the medium snapshot (capped at collect.steps).
- ``medium-expert``: medium then expert, 2·collect.steps.

The trained snapshots are cached in ``<out_dir>/behaviour/<env>/seed<k>/dqn-<hash>/`` (hash over
everything that changes them), so the levels of one (env, seed) share one DQN run.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from omegaconf import OmegaConf

from cql_runner.data.cache import user_cache_dir
from cql_runner.discrete.evaluation import DiscretePolicy, discrete_rollout, epsilon_greedy
from cql_runner.envs import EnvError, make_env, make_vector_env
from cql_runner.logging.console import ConsoleLogger
from cql_runner.rollout import Episode
from cql_runner.torch_threads import torch_threads

from .behaviour import _atomic, select_medium
from .levels import _score, collect_episodes, level_metadata, new_dataset_id, timed_spec
from .online_dqn import greedy_policy, greedy_return, q_network, replay_episodes, train_dqn
from .policies import REF_OFFSET, numpy_generator
from .replay import ReplayBuffer
from .writer import DatasetInfo, code_version, write_dataset

log = logging.getLogger(__name__)
CACHE_FORMAT = 1


@dataclass
class DQNBehaviour:
    dir: Path
    summary: dict[str, Any]
    weights: dict[str, dict[str, torch.Tensor]]

    def policy(self, which: str) -> DiscretePolicy:
        s = self.summary
        return greedy_policy(q_network(s["obs_dim"], s["n_actions"], s["hidden"], self.weights[which]))

    def replay(self) -> ReplayBuffer:
        with np.load(self.dir / "medium_replay.npz") as f:
            return ReplayBuffer.from_state({k: f[k] for k in f.files})


def cache_key(cfg: Any) -> dict[str, Any]:
    return {
        "format": CACHE_FORMAT,
        "learner": "dqn",
        "env": cfg.env,
        "max_episode_steps": cfg.max_episode_steps,
        "seed": int(cfg.seed),
        "dqn": OmegaConf.to_container(cfg.dqn, resolve=True) if OmegaConf.is_config(cfg.dqn) else dict(vars(cfg.dqn)),
        "medium_fraction": float(cfg.medium_fraction),
        "ref_episodes": int(cfg.ref_episodes),
        "threads": int(cfg.threads),
    }


def behaviour_dir(cfg: Any) -> Path:
    root = Path(cfg.out_dir).expanduser() if cfg.out_dir else user_cache_dir()
    digest = hashlib.sha256(json.dumps(cache_key(cfg), sort_keys=True).encode()).hexdigest()[:12]
    return root / "behaviour" / cfg.env.replace("/", "_") / f"seed{int(cfg.seed)}" / f"dqn-{digest}"


def random_return(cfg: Any, n_actions: int) -> float:
    rng = numpy_generator(cfg.seed, "ref")

    def uniform(obs: np.ndarray) -> np.ndarray:
        return rng.integers(n_actions, size=obs.shape[:-1])

    return greedy_return(cfg.env, uniform, int(cfg.seed), int(cfg.ref_episodes), REF_OFFSET, cfg.max_episode_steps)


def load_or_train(cfg: Any, n_actions: int) -> DQNBehaviour:
    directory = behaviour_dir(cfg)
    if (directory / "summary.json").is_file():
        log.info("reusing behaviour policies from %s", directory)
        return _load(directory)
    directory.mkdir(parents=True, exist_ok=True)
    log.info("training DQN on %s for %d steps (cache: %s)", cfg.env, cfg.dqn.steps, directory)
    run = train_dqn(cfg.env, cfg.dqn, int(cfg.seed), cfg.max_episode_steps, progress=bool(cfg.progress))
    evals = [s.eval_return for s in run.snapshots]
    expert = run.snapshots[int(np.argmax(evals))]
    r_random = random_return(cfg, n_actions)
    hidden = list(cfg.dqn.hidden)

    def ref(weights: dict[str, torch.Tensor]) -> float:
        policy = greedy_policy(q_network(run.obs_dim, n_actions, hidden, weights))
        return greedy_return(cfg.env, policy, int(cfg.seed), int(cfg.ref_episodes), REF_OFFSET, cfg.max_episode_steps)

    r_expert = ref(expert.q)
    medium = run.snapshots[select_medium(evals, r_random, r_expert, float(cfg.medium_fraction))]
    r_medium = ref(medium.q)
    if r_expert <= r_random:
        log.warning("the DQN expert (%.1f) is no better than random (%.1f); raise dqn.steps", r_expert, r_random)
    for name, snap in (("expert", expert), ("medium", medium)):
        _atomic(directory / f"{name}.pt", lambda f, snap=snap: torch.save(snap.q, f))
    _atomic(directory / "medium_replay.npz", lambda f: np.savez(f, **run.replay.state(end=medium.step)))
    summary = {
        **cache_key(cfg),
        "obs_dim": run.obs_dim,
        "n_actions": n_actions,
        "hidden": hidden,
        "random_return": r_random,
        "expert_return": r_expert,
        "medium_return": r_medium,
        "threshold": r_random + float(cfg.medium_fraction) * (r_expert - r_random),
        "expert_step": expert.step,
        "medium_step": medium.step,
        "evals": [[s.step, s.eval_return] for s in run.snapshots],
        "train_episodes": len(run.episode_returns),
        "updates": run.updates,
        "dqn_seconds": run.seconds,
        "updates_per_second": run.updates / run.update_seconds if run.update_seconds > 0 else None,
    }
    _atomic(directory / "summary.json", lambda f: f.write(json.dumps(summary, indent=2).encode()))
    return _load(directory)


def _load(directory: Path) -> DQNBehaviour:
    summary = json.loads((directory / "summary.json").read_text())
    weights = {n: torch.load(directory / f"{n}.pt", weights_only=True) for n in ("expert", "medium")}
    return DQNBehaviour(directory, summary, weights)


def level_episodes(
    cfg: Any, behaviour: DQNBehaviour | None, n_actions: int, obs_shape: tuple[int, ...]
) -> list[Episode]:
    level, seed, steps = cfg.level, int(cfg.seed), int(cfg.collect.steps)
    if level == "medium-replay":
        assert behaviour is not None
        replay = behaviour.replay()
        return replay_episodes(replay, min(replay.size, steps), obs_shape)
    parts = {"medium-expert": ["medium", "expert"]}.get(level, [level])
    console = ConsoleLogger(steps * len(parts), enabled=bool(cfg.progress), keys=())
    vec = make_vector_env(cfg.env, int(cfg.collect.envs), cfg.max_episode_steps, discrete=True)
    episodes: list[Episode] = []
    try:
        for part in parts:
            rng = numpy_generator(seed, part)
            policy: DiscretePolicy
            if part == "random":

                def uniform(obs: np.ndarray, rng: np.random.Generator = rng) -> np.ndarray:
                    return rng.integers(n_actions, size=obs.shape[:-1])

                policy = uniform
            else:
                assert behaviour is not None
                epsilon = 0.0 if cfg.collect.deterministic else float(cfg.collect.epsilon)
                policy = epsilon_greedy(behaviour.policy(part), epsilon, n_actions, [rng])
            episodes += collect_episodes(vec, policy, seed, part, steps, None, run=discrete_rollout)
            console.advance(sum(ep.length for ep in episodes))
    finally:
        console.close()
        vec.close()
    return episodes


def collect_discrete(cfg: Any) -> str:
    """Build the dataset ``cfg`` asks for on a Discrete-action env; print the summary."""
    env = make_env(cfg.env, cfg.max_episode_steps, discrete=True)
    try:
        # gymnasium types action_space as Space, which has no .n; make_env(discrete=True) gives a Discrete one.
        spec, n_actions = env.spec, int(env.action_space.n)  # type: ignore[attr-defined]
        shape, space_name = env.observation_space.shape, str(env.observation_space)
        is_box = isinstance(env.observation_space, gym.spaces.Box)
    finally:
        env.close()
    if not is_box:
        raise EnvError(f"cql-collect needs a Box observation space; {cfg.env!r} has {space_name}")
    assert shape is not None  # a Box always has a shape
    spec, dataset_id = timed_spec(cfg, spec), new_dataset_id(cfg)
    with torch_threads(cfg.threads):
        needs_dqn = cfg.level != "random" or cfg.ref_max_score is None
        behaviour = load_or_train(cfg, n_actions) if needs_dqn else None
        returns = dict(behaviour.summary) if behaviour is not None else {}
        ref_min = cfg.ref_min_score
        if ref_min is None:
            ref_min = returns["random_return"] if "random_return" in returns else random_return(cfg, n_actions)
        ref_max = cfg.ref_max_score if cfg.ref_max_score is not None else returns["expert_return"]
        episodes = level_episodes(cfg, behaviour, n_actions, tuple(shape))

    ep_returns = np.array([ep.episode_return for ep in episodes])
    extra = level_metadata(
        cfg, ep_returns, returns, behaviour.dir if behaviour is not None else None, timing_key="dqn_seconds"
    )
    how = "greedy" if cfg.collect.deterministic else f"epsilon-greedy (epsilon {cfg.collect.epsilon})"
    description = (
        f"D4RL-style '{cfg.level}' dataset {dataset_id} for {cfg.env}, built by cql-collect with {code_version()}, "
        f"seed {cfg.seed}. Behaviour policies: online Double DQN (the cql-runner discrete CQL agent without the "
        f"conservative term), {cfg.dqn.steps} env steps, hidden {list(cfg.dqn.hidden)}; expert = best greedy eval "
        f"snapshot; medium = first snapshot reaching random + {cfg.medium_fraction:.3g}*(expert - random); "
        f"frozen-policy actions are {how}. ref_min_score = mean return of uniform random actions, ref_max_score = "
        f"mean return of the greedy expert ({cfg.ref_episodes} episodes each) unless overridden."
    )
    algorithm = {
        "random": "cql-runner uniform random policy",
        "medium-replay": "cql-runner DQN replay buffer (up to medium)",
        "medium-expert": "cql-runner DQN (medium + expert)",
    }.get(cfg.level, f"cql-runner DQN ({cfg.level})")
    info = DatasetInfo(
        dataset_id,
        spec,
        algorithm,
        description,
        float(ref_min),
        float(ref_max),
        int(cfg.ref_episodes),
        int(cfg.seed),
        extra,
    )
    path = write_dataset(episodes, info, overwrite=bool(cfg.overwrite))
    n_steps = int(sum(ep.length for ep in episodes))
    size = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
    print(f"env: {cfg.env}  level: {cfg.level}  seed: {cfg.seed}")
    if behaviour is not None:
        s = behaviour.summary
        print(
            f"behaviour: {behaviour.dir} (DQN {s['dqn']['steps']} steps; medium at step {s['medium_step']}, "
            f"expert at step {s['expert_step']})"
        )
        print(
            f"returns: random {s['random_return']:.1f}  medium {s['medium_return']:.1f}  "
            f"expert {s['expert_return']:.1f}"
        )
    print(f"reference scores: min {ref_min:.1f}  max {ref_max:.1f}")
    print(
        f"data: {len(episodes)} episodes, {n_steps} transitions, mean episode return {ep_returns.mean():.1f} "
        f"(normalized {_score(ep_returns.mean(), ref_min, ref_max):.1f})"
    )
    print(f"written: {path} ({size / 2**20:.1f} MiB)")
    print(f"dataset: {dataset_id}")
    return dataset_id
