"""``python -m analysis`` = ``qd-analyze``."""

from analysis.cli import main

raise SystemExit(main())
