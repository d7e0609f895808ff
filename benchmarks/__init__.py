"""Benchmarks of mefstream, run by hand (never by pytest).

From the repository root::

    python -m benchmarks.run [--quick] [--only ROW] [--repeats N]
    python -m benchmarks.soak [--clients 16] [--duration 60]

See ``benchmarks/README.md``.
"""
