"""Eval videos: one deterministic episode per seed, rendered headless, saved as GIF.

MuJoCo tasks render through EGL; classic-control tasks (the default Pendulum) through pygame,
which gymnasium[classic-control] installs and which needs no display with SDL's dummy driver.
Rendering is a nice-to-have: any failure (no EGL, an env without rgb_array rendering)
is reported once and turns videos off, never the run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import gymnasium as gym
import numpy as np

from cql_runner.data.spaces import flatten_obs, from_unit_actions

log = logging.getLogger("cql_runner")
Policy = Callable[[np.ndarray], np.ndarray]


def record_episodes(
    env_id: str,
    policy: Policy,
    seeds: Sequence[int],
    obs_keys: Sequence[str] | None,
    max_frames: int = 500,
    size: tuple[int, int] = (240, 180),
) -> list[np.ndarray]:
    """Frames (T, H, W, 3) of one episode per agent k, env k reset with seeds[k]."""
    # Headless: MuJoCo through EGL, pygame (classic control) through SDL's dummy video driver,
    # unless the user chose another backend.
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    kwargs: dict[str, Any] = {"render_mode": "rgb_array"}
    mujoco = env_id in gym.registry and "mujoco" in str(gym.registry[env_id].entry_point)
    if mujoco:
        kwargs |= {"width": size[0], "height": size[1]}
    envs = [gym.make(env_id, **kwargs) for _ in seeds]
    try:
        obs = [env.reset(seed=int(s))[0] for env, s in zip(envs, seeds)]
        frames: list[list[np.ndarray]] = [[cast(np.ndarray, env.render())] for env in envs]
        done = [False] * len(envs)
        space = cast(gym.spaces.Box, envs[0].action_space)  # continuous actions
        low, high = space.low, space.high
        while not all(done) and len(frames[0]) < max_frames:
            flat = np.stack([flatten_obs(o, obs_keys) for o in obs])[:, None, :]  # (K, 1, d)
            actions = from_unit_actions(policy(flat)[:, 0], low, high)
            for k, env in enumerate(envs):
                if done[k]:
                    continue
                obs[k], _, terminated, truncated, _ = env.step(actions[k])
                frames[k].append(cast(np.ndarray, env.render()))  # rgb_array mode
                done[k] = terminated or truncated
        return [shrink(np.stack(f), max(size)) for f in frames]
    finally:
        for env in envs:
            env.close()


def shrink(frames: np.ndarray, longest: int) -> np.ndarray:
    """Every k-th pixel so the longer side is at most ``longest``: classic-control envs render at a fixed
    500×500, which would make GIFs four times the size of the MuJoCo ones."""
    k = -(-max(frames.shape[1:3]) // longest)  # ceil
    return frames[:, ::k, ::k] if k > 1 else frames


def save_gif(frames: np.ndarray, path: Path, fps: int = 30) -> Path:
    import imageio.v2 as imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimsave(path, list(frames), duration=1000 / fps, loop=0)
    return path


class VideoRecorder:
    """Every ``every``-th evaluation, one GIF per seed into <run_dir>/videos/."""

    def __init__(self, env_id: str, obs_keys: Sequence[str] | None, every: int, max_frames: int) -> None:
        self.env_id, self.obs_keys = env_id, obs_keys
        self.every, self.max_frames = every, max_frames
        self.evaluations = 0
        self.enabled = every > 0

    def maybe_record(
        self, policy: Policy, seeds: Sequence[int], run_dirs: Sequence[Path], step: int
    ) -> list[Path | None]:
        self.evaluations += 1
        if not self.enabled or self.evaluations % self.every:
            return [None] * len(run_dirs)
        try:
            clips = record_episodes(self.env_id, policy, seeds, self.obs_keys, self.max_frames)
            return [save_gif(c, d / "videos" / f"eval_step{step:08d}.gif") for c, d in zip(clips, run_dirs)]
        except Exception as exc:  # rendering depends on the machine; never let it end a run
            self.enabled = False
            log.warning(
                "eval video failed (%s: %s); videos are off for this run. "
                "Headless MuJoCo needs MUJOCO_GL=egl or osmesa; classic-control tasks need pygame "
                "(pip install 'gymnasium[classic-control]')",
                type(exc).__name__,
                str(exc).splitlines()[0],
            )
            return [None] * len(run_dirs)
