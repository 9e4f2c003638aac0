"""Is the wandb server answering? Asked before ``wandb.init``, with a hard time bound.

With credentials but a dead or unreachable server, ``wandb.init`` in online mode blocks
for ``init_timeout + 10`` s and then fails, so every start, resume and sweep job paid over
a minute before its first step, and the run was not mirrored at all. One HTTP request on
a daemon thread, joined for at most :data:`PROBE_TIMEOUT_S`, decides instead; an
unreachable server means logging offline, which ``wandb sync`` uploads later.
"""

from __future__ import annotations

import os
import threading
import urllib.error
import urllib.request

PROBE_TIMEOUT_S = 3.0
DEFAULT_BASE_URL = "https://api.wandb.ai"


def wandb_base_url() -> str:
    """The server wandb would talk to: its settings (which read $WANDB_BASE_URL and settings files)."""
    try:
        from wandb.sdk import wandb_setup

        return str(wandb_setup.singleton().settings.base_url)
    except Exception:
        return os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL


def unreachable_reason(base_url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when an HTTP server answers at ``base_url`` within ``timeout`` s, else why not.

    The request runs on a daemon thread so that a hanging DNS lookup cannot outlast the bound.
    Any HTTP answer below 500 counts as reachable (the root URL may well say 404).
    """
    result: list[str | None] = []

    def attempt() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(base_url, method="HEAD"), timeout=timeout).close()
            result.append(None)
        except urllib.error.HTTPError as exc:
            result.append(None if exc.code < 500 else f"HTTP {exc.code}")
        except Exception as exc:
            reason = getattr(exc, "reason", exc)
            result.append(" ".join(str(reason).split()) or type(exc).__name__)

    thread = threading.Thread(target=attempt, name="wandb-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if not result:
        return f"no answer within {timeout:g} s"
    return result[0]
