"""Gradient-only op cases: like op_cases (each module defines `cases()` yielding OpCase
objects), for what the forward cases do not cover: training-mode forwards (BatchNorm with batch
statistics) and argument variants that matter only to backward passes. The gradient fixtures
(python/fixture_grads.py) take every case of op_cases and of this package.
"""
