"""The tests' support code: helpers, harnesses, the fault proxy, the Redis topologies.

``tests/`` is an import root (pyproject's ``pythonpath``), so a test imports these as
``from support.helpers import make_config``. Fixtures live in ``tests/conftest.py``.
"""
