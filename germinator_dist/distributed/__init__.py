"""Everything that runs on Ray, and the only package that imports ray: the job runner, the Ray
evaluator pool, the trainer actor, the driver lease held through Ray job submission, capacity, metrics
and sweeps (tests/unit/test_import_guard.py).
"""
