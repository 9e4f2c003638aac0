"""The suite's clock and the machine it ran on, kept in <out>/timing.json across resumed invocations.

Only time actually spent is recorded (a skipped run costs nothing), so the total is the wall time the
whole suite took, even when it was run in several sittings.
"""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from pathlib import Path
from typing import Any

FILENAME = "timing.json"


def machine() -> dict[str, Any]:
    """CPU model, core count and, where present, the GPU: what RESULTS.md names as 'the machine'."""
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": model,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


class Timing:
    """Accumulates seconds per phase (collect:<ds>, train:<ds>/<method>, value:<ds>/<method>) and per invocation."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / FILENAME
        self.data: dict[str, Any] = (
            json.loads(self.path.read_text()) if self.path.is_file() else {"phases": {}, "invocations": []}
        )
        self._start = time.perf_counter()
        self.data["invocations"].append({"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": 0.0})
        self.data["machine"] = machine()
        self._lock = threading.Lock()  # training runs finish in worker threads (--jobs)

    def add(self, phase: str, seconds: float) -> None:
        with self._lock:
            self.data["phases"][phase] = round(self.data["phases"].get(phase, 0.0) + seconds, 3)
        self.save()

    def save(self, plan: dict[str, Any] | None = None) -> None:
        with self._lock:
            self._save(plan)

    def _save(self, plan: dict[str, Any] | None) -> None:
        self.data["invocations"][-1]["seconds"] = round(time.perf_counter() - self._start, 3)
        self.data["total_s"] = round(sum(i["seconds"] for i in self.data["invocations"]), 3)
        if plan is not None:
            self.data["plan"] = plan
        tmp = self.path.with_suffix(".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(self.data, indent=2) + "\n")
        tmp.replace(self.path)
