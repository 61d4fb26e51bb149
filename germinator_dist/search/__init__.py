"""The search: proposers, the layer evaluator and its scorers, the evaluator pool and the driver.

Pure: never imports ray or redis; the driver reaches the table through ``table_protocol.SeedTableLike``
and the workers through ``pool.EvaluatorPool`` (tests/unit/test_import_guard.py).
"""
