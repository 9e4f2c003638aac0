"""``python -m cql_runner.evidence`` is ``cql-evidence``."""

import sys

from cql_runner.evidence.cli import main

sys.exit(main())
