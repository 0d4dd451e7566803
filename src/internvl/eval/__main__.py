"""`python -m internvl.eval run | score | compare` (the same commands as `internvl eval`)."""

import sys

from internvl.eval.cli import main

sys.exit(main())
