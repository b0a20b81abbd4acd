"""A small asyncua server of the tests' own, for tests that need control over an OPC UA
server (status codes, namespaces, restarts, operation limits), and waits for what it causes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime

from asyncua import Server, ua

URI = "urn:scadawatch:test"
TAGS = ("a", "b", "c", "d", "e")
INITIAL = {"d": ("", ua.VariantType.String), "e": (False, ua.VariantType.Boolean)}
LIMIT = 20.0  # seconds any wait of the OPC UA tests may take before it fails
T0 = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)


class UaServer:
    """An asyncua server with one Double variable per tag in namespace `URI`, registered after
    `extra` namespaces so that its index is not the usual 2."""

    def __init__(self, port: int = 0, extra: tuple[str, ...] = (), limit: int = 0) -> None:
        self.port, self.extra, self.limit = port, extra, limit
        self.server = Server()
        self.ns = 0

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}/test"

    async def __aenter__(self) -> UaServer:
        server = self.server
        await server.init()
        server.set_endpoint(f"opc.tcp://127.0.0.1:{self.port}/test")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        for uri in self.extra:
            await server.register_namespace(uri)
        self.ns = await server.register_namespace(URI)
        for tag in TAGS:
            initial, vtype = INITIAL.get(tag, (0.0, ua.VariantType.Double))
            await server.nodes.objects.add_variable(ua.NodeId(tag, self.ns), tag, initial,
                                                    vtype)
            await self.write(tag, initial, source=T0)
        if self.limit:
            for name in ("MaxNodesPerRead", "MaxNodesPerRegisterNodes",
                         "MaxMonitoredItemsPerCall"):
                node = getattr(ua.ObjectIds, f"Server_ServerCapabilities_OperationLimits_{name}")
                await server.write_attribute_value(ua.NodeId(node), ua.DataValue(
                    ua.Variant(self.limit, ua.VariantType.UInt32)))
        await server.start()
        self.port = server.bserver.port
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.stop()

    async def write(self, tag: str, value: object, status: int = ua.StatusCodes.Good,
                    source: datetime | None = None, server: datetime | None = None) -> None:
        variant = (ua.Variant(value) if not isinstance(value, float)
                   else ua.Variant(value, ua.VariantType.Double))
        await self.server.write_attribute_value(ua.NodeId(tag, self.ns), ua.DataValue(
            variant, StatusCode=ua.StatusCode(status), SourceTimestamp=source or T0,
            ServerTimestamp=server or datetime.now(UTC)))


def ns_of(tag: str) -> str:
    return f"nsu={URI};s={tag}"


async def eventually(condition: Callable[[], bool]) -> None:
    """Until `condition()` holds, checked every 20 ms; fail after LIMIT seconds."""
    deadline = time.monotonic() + LIMIT
    while not condition():
        assert time.monotonic() < deadline, f"condition not met within {LIMIT} s"
        await asyncio.sleep(0.02)


def ns(t: datetime) -> int:
    return int(t.timestamp() * 1_000_000) * 1000
