"""opsync: an asyncio controller framework (informer cache, work queue, controllers, manager).

It knows nothing of 1Password: ``onepassword_access`` and the operator in ``controllers`` build on it, and
only ``opsync.cli`` wires the three together (docs/architecture.md).
"""

__version__ = "0.1.0"
