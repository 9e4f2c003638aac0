"""Atari frames as each data source produced them, for the evaluation env and the loaders alike.

Two frame pipelines, named in the dataset's ``meta.extra["atari"]`` by the source that knows
how its frames were made, and rebuilt here for evaluation so the agent sees the same frames:

- ``dopamine`` (the DQN Replay Dataset): ALE at frame skip 1 with sticky actions 0.25 under
  gymnasium's AtariPreprocessing (up to 30 no-ops at reset, frame skip 4 with a max over the last
  two frames, grey then 84×84), the standard of Machado et al. (2018) that Dopamine used.
- ``resize-grey`` (Minari's ``atari/<game>/expert-v0``): ALE with the frame skip and sticky-action
  probability stored in the dataset's env spec (4 and 0 for every published set), no max-pooling
  and no no-ops (its generation script used none), then gymnasium's ResizeObservation to 84×84 and
  GrayscaleObservation, as the script did before its policy saw a frame. The data stores the raw
  210×160 RGB screens; the loader passes each through these same two wrappers.

A stack of ``frame_stack`` frames (gymnasium's FrameStackObservation) goes on top of either.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import AtariPreprocessing, GrayscaleObservation, ResizeObservation

from cql_runner.envs import ATARI_INSTALL_HINT, EnvError, make_env

SCREEN = 84
# The DQN Replay Dataset's ALE settings (Agarwal et al. 2020, after Machado et al. 2018).
DOPAMINE = {"pipeline": "dopamine", "repeat_action_probability": 0.25, "frameskip": 4, "noop_max": 30}
PIPELINES = ("dopamine", "resize-grey")


def _needs_opencv() -> EnvError:
    return EnvError(f"resizing Atari frames needs OpenCV; install it with `{ATARI_INSTALL_HINT}`")


def resize_grey(env: gym.Env) -> gym.Env:
    """84×84 grey frames the way Minari's Atari sets were preprocessed: resize, then grey."""
    try:
        return GrayscaleObservation(ResizeObservation(env, (SCREEN, SCREEN)))
    except gym.error.DependencyNotInstalled as exc:
        raise _needs_opencv() from exc


class _FrameStub(gym.Env):
    """An env that only carries an observation space, so the frame wrappers can be built offline."""

    def __init__(self, space: gym.spaces.Box) -> None:
        self.observation_space = space
        self.action_space = gym.spaces.Discrete(1)


def frame_transform(space: gym.spaces.Box) -> Callable[[np.ndarray], np.ndarray]:
    """The ``resize-grey`` pipeline as a function of one raw screen: (H, W, 3) uint8 → (84, 84) uint8,
    through the same gymnasium wrappers the evaluation env uses."""
    grey = resize_grey(_FrameStub(space))
    assert isinstance(grey, GrayscaleObservation)
    resize = grey.env
    assert isinstance(resize, ResizeObservation)
    return lambda frame: grey.observation(resize.observation(frame))


def make_atari_env(env_id: str, max_episode_steps: int | None, atari: Mapping[str, Any]) -> gym.Env:
    """``ALE/<Game>-v5`` preprocessed by the dataset's pipeline (before the frame stack)."""
    pipeline = atari.get("pipeline")
    sticky = float(atari["repeat_action_probability"])
    if pipeline == "dopamine":
        env = make_env(env_id, max_episode_steps, discrete=True, frameskip=1, repeat_action_probability=sticky)
        try:
            return AtariPreprocessing(
                env,
                noop_max=int(atari["noop_max"]),
                frame_skip=int(atari["frameskip"]),
                screen_size=SCREEN,
                grayscale_obs=True,
            )
        except gym.error.DependencyNotInstalled as exc:
            raise _needs_opencv() from exc
    if pipeline == "resize-grey":
        env = make_env(
            env_id,
            max_episode_steps,
            discrete=True,
            frameskip=int(atari["frameskip"]),
            repeat_action_probability=sticky,
        )
        return resize_grey(env)
    raise EnvError(f"unknown Atari frame pipeline {pipeline!r} in the dataset metadata; expected one of {PIPELINES}")
