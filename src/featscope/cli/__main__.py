"""``python -m featscope.cli ...`` (what torchrun and accelerate launch run)."""

import sys

from featscope.cli import main

sys.exit(main())
