"""`python -m syncd.sandbox` is `syncd sandbox`."""

import sys

from syncd.sandbox.server import main

sys.exit(main())
