"""``python -m qd_models.sweep``: many quantization configs on one loaded model (:mod:`qd_models.runners.sweep`)."""

from qd_models.runners.sweep import main

if __name__ == "__main__":
    raise SystemExit(main())
