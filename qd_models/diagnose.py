"""``python -m qd_models.diagnose``: weight statistics and tokenizer fertility (:mod:`qd_models.runners.diagnose`)."""

from qd_models.runners.diagnose import main

if __name__ == "__main__":
    raise SystemExit(main())
