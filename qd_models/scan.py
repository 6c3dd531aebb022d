"""``python -m qd_models.scan``: block × language sensitivity scan (:mod:`qd_models.runners.scan`)."""

from qd_models.runners.scan import main

if __name__ == "__main__":
    raise SystemExit(main())
