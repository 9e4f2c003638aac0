"""TensorBoard mirror of the local logs: scalars, the config as text, eval videos and HParams.

Event files go to ``<run_dir>/tb/``. A resumed run opens a new event file whose purge step is the
first step after the checkpoint, so TensorBoard hides what the interrupted attempt logged after it:
each step appears once, as in metrics.jsonl (which the JSONL logger truncates the same way).

The online phase of fine-tuning writes to ``<run_dir>/tb/online/`` (its own TensorBoard run),
with every tag under ``online/`` and the env step as global step: its curves have their own
charts and an x-axis that counts env steps, not gradient steps.
"""

from __future__ import annotations

import io
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cql_runner.logging.base import ONLINE_STEP_METRIC, online_view

log = logging.getLogger("cql_runner")

ONLINE_SUBDIR = "online"

# Summary keys shown as metrics in the HParams view, under "summary/<key>".
HPARAM_METRICS = ("final_normalized_score", "best_normalized_score", "final_return")
# Config keys that are bookkeeping rather than hyperparameters.
_NOT_HPARAMS = ("hydra.", "logger.", "run_dir", "resume", "dataset.path", "dataset.cache_dir", "train.progress")


def flat_hparams(config: Mapping[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """Dotted keys to values HParams accepts (bool, number, string); lists and None become strings."""
    out: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if dotted.startswith(_NOT_HPARAMS):
            continue
        if isinstance(value, Mapping):
            out.update(flat_hparams(value, f"{dotted}."))
        elif isinstance(value, (bool, int, float, str)):
            out[dotted] = value
        else:
            out[dotted] = str(value)
    return out


class TensorBoardLogger:
    """Writes the run's metrics, config, videos and final scores as TensorBoard events."""

    def __init__(
        self,
        cfg: Any,
        run_dir: str | os.PathLike[str],
        config: Mapping[str, Any] | None = None,
        resume_step: int | None = None,
        **_: Any,  # run_name, group, tags, concurrent: wandb's concerns
    ) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(run_dir) / str(getattr(cfg, "subdir", "tb"))
        self._config = dict(config) if config is not None else {}
        self._resume_step = resume_step
        self._flush_secs = int(getattr(cfg, "flush_secs", 30))
        purge = None if resume_step is None else int(resume_step) + 1
        self._writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=purge, flush_secs=self._flush_secs)
        self._online_writer: Any = None
        if config is not None and resume_step is None:
            import yaml

            text = yaml.safe_dump(self._config, sort_keys=False)
            # Indented by 4 spaces: TensorBoard renders text as Markdown, and this keeps it a code block.
            self._writer.add_text("config", "".join(f"    {line}\n" for line in text.splitlines()), 0)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        online = online_view(metrics)
        if online is None:
            for key, value in metrics.items():
                self._writer.add_scalar(key, float(value), int(step))
            return
        env_step = int(online[ONLINE_STEP_METRIC])
        writer = self._online(offline_steps=int(step) - env_step)
        for key, value in online.items():
            if key != ONLINE_STEP_METRIC:  # the x-axis itself
                writer.add_scalar(key, float(value), env_step)

    def _online(self, offline_steps: int) -> Any:
        """The online phase's writer, opened at its first record. A resumed run purges what the
        interrupted attempt logged after the checkpoint's env step, as for the offline writer."""
        if self._online_writer is None:
            from torch.utils.tensorboard import SummaryWriter

            purge = None if self._resume_step is None else max(int(self._resume_step) - offline_steps, 0) + 1
            self._online_writer = SummaryWriter(
                log_dir=str(self.log_dir / ONLINE_SUBDIR), purge_step=purge, flush_secs=self._flush_secs
            )
        return self._online_writer

    def log_video(self, key: str, path: Path, step: int) -> None:
        """The GIF as an animated image (TensorBoard's Images tab plays it); no video encoder needed."""
        from PIL import Image
        from tensorboard.compat.proto.summary_pb2 import Summary

        data = Path(path).read_bytes()
        with Image.open(io.BytesIO(data)) as gif:
            width, height = gif.size
        image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=data)
        self._writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=key, image=image)]), int(step))

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        """The hyperparameters with the run's final scores, for TensorBoard's HParams view."""
        from torch.utils.tensorboard.summary import hparams

        metrics = {
            f"summary/{k}": float(summary[k])
            for k in HPARAM_METRICS
            if isinstance(summary.get(k), (int, float)) and math.isfinite(summary[k])
        }
        step = int(summary.get("steps") or 0)
        writer = self._writer._get_file_writer()
        for part in hparams(flat_hparams(self._config), metrics):
            writer.add_summary(part, step)
        for key, value in metrics.items():
            self._writer.add_scalar(key, value, step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
        if self._online_writer is not None:
            self._online_writer.close()


def read_scalars(log_dir: str | os.PathLike[str]) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series under ``log_dir`` as TensorBoard shows it (purged steps dropped), by tag."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={SCALARS: 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()[SCALARS]}
