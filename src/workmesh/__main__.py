"""``python -m workmesh``: the same command as ``workmesh``."""

from ._cli import main

raise SystemExit(main())
