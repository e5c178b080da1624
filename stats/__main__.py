"""``python -m stats``: see ``stats._cli``."""

from ._cli import main

raise SystemExit(main())
