"""``python -m featscope``: the same command line as ``featscope``."""

from featscope.cli import main

raise SystemExit(main())
