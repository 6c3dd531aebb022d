"""quant-disparity models: the ``qd-hf`` lm-eval model and the quantization engine.

Importing this package is cheap (no torch): it is imported at interpreter start-up by
``quant_disparity.pth`` to register ``qd-hf`` and the ``qd_*`` tasks with lm-eval.
"""

__version__ = "0.1.0"
