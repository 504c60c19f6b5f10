"""`python -m tbkit.report LOGDIR`: the report of runs (lives in `tbkit.tools.report`)."""

import sys

from tbkit.tools.report import *  # noqa: F403
from tbkit.tools.report import main

if __name__ == "__main__":
    sys.exit(main())
