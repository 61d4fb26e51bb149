"""The pure core: the seed generator, the seeded layers and models, data sets, checkpoints, metrics.

Imports torch and numpy, never ray or redis (tests/unit/test_import_guard.py).
"""
