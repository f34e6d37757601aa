"""`python -m syncd` is the same program as the `syncd` console script."""

import sys

from syncd.cli import main

sys.exit(main())
