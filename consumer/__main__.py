"""`python -m consumer`: the `accumulator` command line."""

import sys

from consumer.cli import main

sys.exit(main())
