"""Benchmarks (see docs/benchmarks.md).

``python -m bench`` (``make bench``) runs the operator scenarios: ``scenarios`` (what is measured), ``cluster``
(the objects, created fast, and timed watches), ``processes`` (opsync and the Connect emulator as
child processes, their counters, memory and CPU), ``report`` (the tables and plots). ``bench_emulator``
measures the Connect emulator alone.
"""
