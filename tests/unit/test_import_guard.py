"""The pure core must not load ray or redis."""

import subprocess
import sys

CORE = [
    "germinator_dist.prng",
    "germinator_dist.layers",
    "germinator_dist.model",
    "germinator_dist.spec",
    "germinator_dist.records",
    "germinator_dist.checkpoint",
    "germinator_dist.errors",
    "germinator_dist.table_protocol",
]
OPTIONAL_CORE = [
    "germinator_dist.proposers",
    "germinator_dist.trainer",
    "germinator_dist.data",
    "germinator_dist.objectives",
    "germinator_dist.evaluator",
    "germinator_dist.jobspec",
    "germinator_dist.driver",  # reports to Ray metrics only through its on_report hook
    "germinator_dist.job_plot",  # reads the table through whatever table object it is given
]


def test_core_modules_do_not_import_ray_or_redis():
    import importlib.util

    modules = CORE + [m for m in OPTIONAL_CORE if importlib.util.find_spec(m) is not None]
    code = (
        "import sys\n"
        f"for m in {modules!r}: __import__(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'redis'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"core imported: {out.stdout.strip()}"
    assert len(modules) >= len(CORE)
