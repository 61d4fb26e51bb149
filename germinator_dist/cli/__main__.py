"""``python -m germinator_dist.cli ...``: the same as the ``germinator-dist`` command."""

import sys

from germinator_dist.cli.commands import main

sys.exit(main())
