"""Property, against the real API server: every Secret name and data key the sanitisers give is accepted.

``tests/unit/operator/test_sanitisers_property.py`` checks the results against Kubernetes' validation rules as
written down; this asks the API server itself, so a rule we wrote down wrongly cannot hide. Each example
creates (and deletes) one Secret named by ``secret_name`` and keyed by ``secret_data_key`` of generated
strings, including the Go operator's failures (``.``, ``..x``, ``Foo..Bar``, ``a.-b``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from controllers.sanitisers import secret_data_key, secret_name
from opsync.client import Client
from opsync.resources import SECRETS

pytestmark = pytest.mark.integration

T = TypeVar("T")
tricky = st.text(alphabet=st.sampled_from("aZ09.-_ @%😄éİ\n\t/"), max_size=260)
strings = st.one_of(st.text(max_size=300), tricky)


async def test_sanitised_names_and_keys_are_accepted(kube: Client, namespace: str) -> None:
    loop = asyncio.get_running_loop()

    def on_loop(coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(30)

    @settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(name=strings, labels=st.lists(strings, min_size=1, max_size=6))
    @example(name="Foo..Bar", labels=[".", "..x", "..", "a..b"])
    @example(name="a.-b", labels=["-lead", "😄 ice-cream type", "x" * 300])
    @example(name="-" * 300 + "a", labels=["tls.crt", ".dockerconfigjson"])
    def create_and_delete(name: str, labels: list[str]) -> None:
        sanitised = secret_name(name) or "fallback-name"
        keys = {key for label in labels if (key := secret_data_key(label)) is not None}
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": sanitised},
            "data": {key: "dg==" for key in keys},
        }
        created = on_loop(kube.create(SECRETS, body, namespace))  # raises InvalidError if refused
        assert set(created.get("data") or {}) == keys
        on_loop(kube.delete(SECRETS, sanitised, namespace))

    # hypothesis runs synchronously: in a thread, with the requests sent on this (free) loop
    await asyncio.to_thread(create_and_delete)
