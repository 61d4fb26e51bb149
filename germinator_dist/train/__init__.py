"""The scale trainer: optimizers (Adam, ADOPT) and the gradient loop on the float scalars.

Pure: never imports ray or redis (tests/unit/test_import_guard.py).
"""
