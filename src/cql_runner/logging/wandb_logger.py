"""The Weights & Biases mirror of the local logs.

wandb is optional at run time in every sense: it is imported lazily, and any failure
(no credentials, no network, a wandb bug) turns this logger into a no-op after one
warning, because the local JSONL log is the record of the run and training must go on.

Facts about wandb 0.31 this relies on:

- ``mode="online"`` with no credentials raises UsageError; we detect that case first,
  without a network call, and log offline instead, so the data can be synced later.
- With credentials but an unreachable server, ``wandb.init`` blocks for up to
  ``init_timeout + 10`` s (wandb adds a 10 s grace period) and raises CommError; so the
  server is probed first (a few seconds at most) and, if it does not answer, we log offline.
- After a failed online init, wandb-core keeps the run id registered in this process:
  another init with the same id here fails ("run ID ... is in use") until
  ``wandb.teardown()``. One logger per run dir per process never meets this.
- ``run.finish()`` waits for uploads forever by default; ``finish_timeout`` bounds it.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import string
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cql_runner.logging.base import ONLINE_STEP_METRIC, online_view

log = logging.getLogger("cql_runner")

ID_FILE = "wandb_id.txt"
_ID_ALPHABET = string.ascii_lowercase + string.digits
# wandb forbids "/" and a few other characters in run ids; ours are always [a-z0-9]{8},
# and a hand-edited file is accepted if it stays within this safe set.
_VALID_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MODE_ALIASES = {"dryrun": "offline", "run": "online"}


def resolve_mode(cfg_mode: str | None) -> str:
    """``cfg.mode`` if set, else ``$WANDB_MODE``, else ``"online"``."""
    mode = cfg_mode or os.environ.get("WANDB_MODE") or "online"
    mode = mode.strip().lower()
    return _MODE_ALIASES.get(mode, mode)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    first_line = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__


def _write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def stable_run_id(run_dir: Path, resume_id: str | None = None) -> str:
    """The wandb run id of ``run_dir``: ``resume_id`` if given, else the one stored in
    ``run_dir/wandb_id.txt``, else a new one. It is (re)written to the file so that a
    resumed run continues the same wandb run."""
    path = Path(run_dir) / ID_FILE
    run_id = resume_id
    if run_id is None and path.exists():
        stored = path.read_text(encoding="utf-8").strip()
        if _VALID_ID.match(stored):
            run_id = stored
        else:
            log.warning("wandb: ignoring invalid run id %r in %s; starting a new wandb run", stored, path)
    if run_id is None:
        run_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))
    if not _VALID_ID.match(run_id):
        raise ValueError(f"invalid wandb run id {run_id!r}: use letters, digits, _ and -")
    if not path.exists() or path.read_text(encoding="utf-8").strip() != run_id:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_text_atomic(path, run_id + "\n")
    return run_id


def has_wandb_credentials() -> bool:
    """Whether wandb would find credentials, decided without any network call.

    Checks, like wandb.init does: $WANDB_API_KEY / $WANDB_IDENTITY_TOKEN_FILE, the
    .netrc entry for the configured host, and the api_key of wandb's settings files.
    """
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    try:
        # wandb >= 0.2x: the same lookup wandb.init performs, with prompting, server
        # verification and session updates all switched off.
        from wandb.sdk import wandb_setup
        from wandb.sdk.lib import wbauth

        settings = wandb_setup.singleton().settings
        auth = wbauth.authenticate_session(
            host=settings.base_url,
            source="cql_runner",
            prompt=False,
            verify=False,
            update_session=False,
        )
        return auth is not None
    except Exception as exc:
        # Internal API moved or a malformed netrc: let wandb.init decide (it fails fast
        # with UsageError when there is no key, which we catch).
        log.debug("wandb: credential check failed (%s); assuming credentials", _describe(exc))
        return True


def _unreachable() -> str | None:
    """Why the wandb server cannot be reached right now (bounded to a few seconds), or None."""
    from cql_runner.logging.wandb_reachability import unreachable_reason, wandb_base_url

    url = wandb_base_url()
    reason = unreachable_reason(url)
    return None if reason is None else f"server {url} unreachable ({reason})"


def _git_root() -> str | None:
    """The git checkout the code runs from, so wandb records its commit even though the
    run dir it is given usually lies outside the repository."""
    for start in (Path(__file__).resolve().parent, Path.cwd()):
        for folder in (start, *start.parents):
            if (folder / ".git").exists():
                return str(folder)
    return None


def _plain_config(config: Any) -> dict[str, Any]:
    if isinstance(config, dict):
        return config
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(config):
            return OmegaConf.to_container(config, resolve=True)  # type: ignore[return-value]
    except ImportError:
        pass
    return dict(config)


# Logged with every offline record and declared as every offline metric's x-axis: the gradient step.
STEP_METRIC = "gradient_step"
# Summaries shown in the runs table and parallel-coordinates view: the best score is its maximum, the
# final score the last value logged (and its maximum, to compare with the best).
SUMMARIES = {"eval/best_normalized_score": "max", "eval/normalized_score": "last,max", "eval/return": "last,max"}
# The online phase of fine-tuning: its metrics (all under online/, see online_view) are plotted
# against env steps, so offline and online curves never share an axis that means two things.
ONLINE_SUMMARIES = {
    "online/eval/best_normalized_score": "max",
    "online/eval/normalized_score": "last,max",
    "online/eval/return": "last,max",
    "online/return": "last,max",
}


def declare_metrics(run: Any) -> None:
    """Each metric's x-axis and summary, so dashboards read right without manual setup."""
    run.define_metric(STEP_METRIC, hidden=True)
    run.define_metric("*", step_metric=STEP_METRIC)
    for name, summary in SUMMARIES.items():
        run.define_metric(name, step_metric=STEP_METRIC, summary=summary)
    run.define_metric(ONLINE_STEP_METRIC, hidden=True)
    for name, summary in ONLINE_SUMMARIES.items():
        run.define_metric(name, step_metric=ONLINE_STEP_METRIC, summary=summary)


class WandbLogger:
    """Mirrors metrics to a wandb run whose id is stable for ``run_dir``.

    Never raises (KeyboardInterrupt aside): any error, from wandb or from a bad
    ``resume_id``, is warned about once and the logger becomes a no-op.
    """

    def __init__(
        self,
        cfg: Any,
        run_dir: str | os.PathLike[str],
        config: Mapping[str, Any] | None = None,
        run_name: str | None = None,
        group: str | None = None,
        tags: Sequence[str] = (),
        resume_id: str | None = None,
        finish_timeout: float = 120.0,
        concurrent: bool = False,
        resume_step: int | None = None,  # unused: a resumed wandb run knows its own step
    ) -> None:
        self.run_dir = Path(run_dir)
        # K seeds trained in one process each keep their own, simultaneously open run.
        self._reinit = "create_new" if concurrent else "finish_previous"
        self.mode = resolve_mode(getattr(cfg, "mode", None))
        self.run_id: str | None = None
        self._run: Any = None
        self._broken_runs: list[Any] = []
        # Steps the resumed wandb run already has; wandb drops (and warns about) logs
        # below its current step, so we skip them quietly instead.
        self._min_step = 0
        # Online metrics declared on the env-step axis so far (by exact name: a name beats the "*" glob).
        self._online_declared = set(ONLINE_SUMMARIES)
        if self.mode == "disabled":
            return
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.run_id = stable_run_id(self.run_dir, resume_id)
            self._run = self._init(cfg, config, run_name, group, tags, finish_timeout)
        except Exception as exc:
            self._disable("init", exc)

    # ----- setup -------------------------------------------------------------------
    def _init(
        self,
        cfg: Any,
        config: Mapping[str, Any] | None,
        run_name: str | None,
        group: str | None,
        tags: Sequence[str],
        finish_timeout: float,
    ) -> Any:
        import wandb

        why_offline = None
        if self.mode == "online":
            why_offline = "no API key found" if not has_wandb_credentials() else _unreachable()
            if why_offline:
                self.mode = "offline"
        settings = wandb.Settings(
            init_timeout=float(getattr(cfg, "init_timeout", 60.0)),
            finish_timeout=float(finish_timeout),
            git_root=_git_root(),
        )
        run = wandb.init(
            dir=str(self.run_dir),
            project=getattr(cfg, "project", None),
            entity=getattr(cfg, "entity", None),
            group=getattr(cfg, "group", None) or group,
            name=getattr(cfg, "name", None) or run_name,
            tags=[*(getattr(cfg, "tags", None) or ()), *tags],
            config=_plain_config(config) if config is not None else None,
            mode=self.mode,  # type: ignore[arg-type]  # resolve_mode returns one of wandb's modes
            id=self.run_id,
            resume="allow",
            # A run left open by an earlier job in this process (a crashed sweep job) is
            # finished rather than silently reused, unless runs are meant to be concurrent.
            reinit=self._reinit,  # type: ignore[arg-type]  # "create_new" or "finish_previous"
            settings=settings,
        )
        if why_offline:
            where = self.sync_dir_of(run) or self.run_dir / "wandb"
            log.warning("wandb: %s; logging offline to %s — sync later with `wandb sync %s`", why_offline, where, where)
        if getattr(run, "resumed", False):
            self._min_step = int(getattr(run, "step", 0) or 0)
        declare_metrics(run)
        return run

    @staticmethod
    def sync_dir_of(run: Any) -> Path | None:
        """The folder wandb writes this run to (what ``wandb sync`` takes)."""
        try:
            return Path(run.settings.sync_dir)
        except Exception:
            return None

    @property
    def sync_dir(self) -> Path | None:
        return self.sync_dir_of(self._run) if self._run is not None else None

    @property
    def active(self) -> bool:
        return self._run is not None

    @property
    def run(self) -> Any:
        """The wandb run, or None when disabled or after a failure."""
        return self._run

    def _disable(self, what: str, exc: BaseException) -> None:
        log.warning(
            "wandb: %s failed (%s); wandb logging is off for this run, local logs continue", what, _describe(exc)
        )
        # Finishing a broken run can block until finish_timeout (say, while the network
        # is down), so it is left to close() instead of stalling training here.
        if self._run is not None:
            self._broken_runs.append(self._run)
        self._run = None

    @staticmethod
    def _finish(run: Any) -> None:
        try:
            run.finish()
        except Exception as exc:
            log.warning("wandb: finishing the run failed (%s)", _describe(exc))

    # ----- the Logger protocol -------------------------------------------------------
    def log(self, metrics: Mapping[str, float], step: int) -> None:
        run = self._run
        if run is None or step < self._min_step:
            return
        try:
            online = online_view(metrics)
            if online is None:
                run.log({**metrics, STEP_METRIC: step}, step=step)
                return
            for name in online.keys() - self._online_declared - {ONLINE_STEP_METRIC}:
                run.define_metric(name, step_metric=ONLINE_STEP_METRIC)
                self._online_declared.add(name)
            # wandb's own step stays the shared, increasing axis (resume relies on it).
            run.log(online, step=step)
        except Exception as exc:
            self._disable("log", exc)

    def log_video(self, key: str, path: Path, step: int) -> None:
        """Log a GIF/MP4 file as a wandb Video at ``step``."""
        run = self._run
        if run is None or step < self._min_step:
            return
        try:
            import wandb

            run.log({key: wandb.Video(str(path)), STEP_METRIC: step}, step=step)
        except Exception as exc:
            self._disable("log_video", exc)

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        if self._run is None:
            return
        try:
            self._run.summary.update(dict(summary))
        except Exception as exc:
            self._disable("log_summary", exc)

    def close(self) -> None:
        runs = [r for r in (self._run, *self._broken_runs) if r is not None]
        self._run, self._broken_runs = None, []
        for run in runs:
            self._finish(run)
