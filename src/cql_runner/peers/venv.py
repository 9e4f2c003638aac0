"""The peer venv: d3rlpy and its pins installed apart from ours, with our torch kept by a constraint.

d3rlpy 2.8.1 pins ``gymnasium==1.0.0``; installed into our venv it would silently downgrade the
gymnasium our runs use. Here it gets its own venv at a location the caller chooses. The constraint
file pins torch, mujoco and numpy to the versions of the running interpreter's environment, so
the peer trains with the same torch and simulates the same MuJoCo as our runs.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

D3RLPY_VERSION = "2.8.1"
# gymnasium[mujoco] brings the MuJoCo env extras; 1.0.0 is the version d3rlpy 2.8.1 pins.
PEER_REQUIREMENTS = (f"d3rlpy=={D3RLPY_VERSION}", "gymnasium[mujoco]==1.0.0")
# Packages whose version in the peer venv must equal ours (the same maths and the same simulator).
PINNED_FROM_OURS = ("torch", "mujoco", "numpy")


class PeerVenvError(RuntimeError):
    """The peer venv could not be built; the message names what to do."""


@dataclass(frozen=True)
class PeerVenv:
    root: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def marker(self) -> Path:
        """Written last by ``build``: its presence means the install finished."""
        return self.root / "cql-runner-peer.txt"

    def is_built(self) -> bool:
        return self.python.is_file() and self.marker.is_file()


def public_version(version: str) -> str:
    """'2.13.0+cpu' -> '2.13.0': a constraint on the public version accepts any local build of it."""
    return version.split("+", 1)[0]


def constraints(versions: Mapping[str, str]) -> str:
    """The pip constraint file's text: ``name==version`` for each package we pin."""
    return "".join(f"{name}=={public_version(versions[name])}\n" for name in PINNED_FROM_OURS if name in versions)


def our_versions() -> dict[str, str]:
    return {name: metadata.version(name) for name in PINNED_FROM_OURS}


def build_commands(venv: PeerVenv, constraint_file: Path, base_python: str) -> list[list[str]]:
    """The commands that build the venv: create it, then install the peers under the constraint."""
    return [
        [base_python, "-m", "venv", str(venv.root)],
        [str(venv.python), "-m", "pip", "install", "--quiet", "-c", str(constraint_file), *PEER_REQUIREMENTS],
    ]


def base_interpreter() -> str:
    """The interpreter our venv was made from (a venv made from a venv's python works too)."""
    return getattr(sys, "_base_executable", None) or sys.executable


def build(venv: PeerVenv, log: Path | None = None) -> PeerVenv:
    """Build the peer venv unless it is already complete; idempotent and safe to rerun after a failure."""
    if venv.is_built():
        return venv
    venv.root.mkdir(parents=True, exist_ok=True)
    constraint_file = venv.root / "constraints.txt"
    constraint_file.write_text(constraints(our_versions()))
    out = open(log, "a") if log is not None else None  # noqa: SIM115 - closed below
    try:
        for cmd in build_commands(venv, constraint_file, base_interpreter()):
            try:
                failed = (
                    subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT if out else None, check=False).returncode
                    != 0
                )
            except OSError:  # e.g. the base interpreter is gone
                failed = True
            if failed:
                where = f"; see {log}" if log else ""
                raise PeerVenvError(
                    f"building the peer venv at {venv.root} failed at `{' '.join(cmd[:4])} ...`"
                    f"{where}; fix the cause and rerun (a finished install is reused)"
                )
    finally:
        if out is not None:
            out.close()
    venv.marker.write_text(f"{' '.join(PEER_REQUIREMENTS)}\n{constraint_file.read_text()}")
    return venv
