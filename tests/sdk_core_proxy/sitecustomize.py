"""Imported by Python at start-up when this folder is on ``PYTHONPATH``: with ``OPSYNC_TEST_SDK_CORE`` set to an
emulator's URL, the 1Password SDK of this process has that emulator's SDK core behind it instead of its native
one (``Emulator`` serves it at ``/__admin/sdk-core/<call>``). Tests use it to run ``opsync run`` as a process
with a service-account token; opsync's own code has no such hook.
"""

from __future__ import annotations

import json
import os

URL = os.environ.get("OPSYNC_TEST_SDK_CORE", "")

if URL:
    import aiohttp
    import onepassword.client
    import onepassword.core

    class CoreError(Exception):
        """As the native core's errors: ``msg`` is the ``{"name", "message"}`` JSON the SDK reads."""

        def __init__(self, msg: str) -> None:
            super().__init__(msg)
            self.msg = msg

    class RemoteCore:
        """The native core's four functions, answered by the emulator over HTTP."""

        async def _call(self, call: str, argument: str) -> str:
            timeout = aiohttp.ClientTimeout(total=60)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.post(f"{URL}/__admin/sdk-core/{call}", json={"argument": argument}) as response,
            ):
                body = await response.json()
            if "error" in body:
                raise CoreError(body["error"])
            return str(body["answer"])

        async def init_client(self, config: str) -> str:
            return await self._call("init_client", config)

        async def invoke(self, invocation: str) -> str:
            return await self._call("invoke", invocation)

        def invoke_sync(self, invocation: str) -> str:
            raise CoreError(json.dumps({"name": "Internal", "message": "synchronous invocations are not emulated"}))

        def release_client(self, client_id: str) -> None:
            """Nothing to release: the emulator forgets clients when it stops."""

    class ProxiedUniffiCore(onepassword.core.UniffiCore):  # type: ignore[misc]
        def __init__(self) -> None:
            self.core = RemoteCore()

    onepassword.client.UniffiCore = ProxiedUniffiCore
