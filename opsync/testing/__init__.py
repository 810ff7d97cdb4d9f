"""Fakes for unit tests of code built on opsync (controller-runtime ships ``envtest`` and a fake client).

- ``FakeClock``: a clock you move by hand, for anything that takes ``clock=`` (queues, rate limiters,
  backoffs, event aggregation, leader election).
- ``FakeClient``: an in-memory stand-in for ``opsync.client.Client``, with the API server's bookkeeping
  (resourceVersion, uid, generation, finalizers) and its errors (NotFound, AlreadyExists, Conflict).
- ``FakeManager``: a ``client`` and a ``cache`` whose informers read the fake client's objects and get its
  events, so a reconciler, or a whole ``Builder`` controller, runs without an API server.
- ``take_ready``: the keys a work queue holds, for tests of event handlers and sources.

For the real thing (a real apiserver, etcd and controller-manager) use ``opsync.envtest``.
"""

from opsync.testing.client import FakeCache, FakeClient, FakeInformer, FakeManager
from opsync.testing.clock import FakeClock
from opsync.testing.queue import take_ready

__all__ = ["FakeCache", "FakeClient", "FakeClock", "FakeInformer", "FakeManager", "take_ready"]
