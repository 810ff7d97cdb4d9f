"""Names vulture (``make lint``) would report as unused, and why each is kept.

Vulture reads this file as code that uses the names; it is never imported. Anything new it reports is dead
code to remove, or an API to list here with its reason.
"""

# The framework's public API: for controllers built on opsync (docs/framework.md) and its tests.
_.owns  # Builder.owns
_.enqueue  # Controller.enqueue
_.mutate  # Client.mutate
_.add_healthz_check
_.add_readyz_check
_.health_probe_port
_.metrics_port
_.current_context  # opsync.logging
generation_changed  # opsync.predicate
resource_version_changed
and_
or_
not_
CONFIGMAPS  # opsync.resources: the built-in kinds
PODS
REPLICASETS
ROLES
ROLEBINDINGS
CLUSTERROLES
CLUSTERROLEBINDINGS
_.list_count  # Informer counters, read by tests and benchmarks
_.relist_count
_.watch_count
_.service_account_client  # envtest.ControlPlane, for tests
_.restart_apiserver
_.compact_etcd
_.restore_crds
_.advance  # opsync.testing.FakeClock, for users' tests

# Protocols implemented for a library that calls them.
_.describe  # prometheus_client Collector
_.collect
_.invoke_sync  # the 1Password SDK calls it on its core (the emulated one answers it)
_.release_client
_._trust_env  # aiohttp.ClientSession reads it (opsync.client explains why it is set)
_.visit_Concat  # Jinja2's code generator and sandbox call these (controllers/templating.py)
_.code_generator_class
_.intercepted_binops
_.bounded_concat
__self  # jinja2's SandboxedEnvironment.call signature, kept positional-only by name

# Test tools and data shapes.
_.clear_faults  # the Connect emulator's API, used by tests
_.favorite  # emulator data: a Connect item field
_.first_seen  # VaultChange: part of what a poll reports
_.controllers  # controllers.main.Operator: the test harness stops each controller
_.trims  # Scavenger.trims: how many times the heap was trimmed (public, read by tests)
