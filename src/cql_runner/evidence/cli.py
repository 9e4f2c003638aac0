"""``cql-evidence``: one console script for the evidence suite's three commands.

    cql-evidence run [OUT] [...]              build the datasets, train, value-check, write RESULTS.md
    cql-evidence results OUT [--out docs]     rewrite RESULTS.md and its figures from a suite's run dirs
    cql-evidence value-check RUN_DIR [...]    the lower-bound check of finished seed run dirs

Each command's own flags: ``cql-evidence COMMAND --help``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# command -> module with ``main(argv) -> int``; imported only when chosen, so ``run --help`` needs no torch.
COMMANDS = {
    "run": "cql_runner.evidence.run_suite",
    "results": "cql_runner.evidence.results_page",
    "value-check": "cql_runner.evidence.value_check",
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"cql-evidence: unknown command {command!r}; use one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return int(importlib.import_module(COMMANDS[command]).main(rest))


if __name__ == "__main__":
    sys.exit(main())
