"""Modbus TCP/RTU polling: one deadline-ordered queue per bus, batches out.

A bus is a TCP endpoint (host, port) or a serial port; every unit id behind it shares its
queue, and its one connection (TCP: `connections` if a device asks for more), because a
Modbus client has one request in flight. Each device is polled on a fixed grid
(next deadline = previous deadline + poll_interval), so a late poll does not shift its rate;
deadlines missed by a whole interval are skipped, not bunched.

Failures: a request is retried `retries` times; a timeout or a lost connection ends the
device's poll (its remaining points are bad with that cause) and opens its circuit breaker
for an exponentially growing, jittered backoff, during which it is not asked and nothing is
emitted for it: its points stay bad, then turn stale once `stale_after` intervals pass
without an update (a bad row per skipped deadline would say nothing new and hide the
staleness). Exception responses mark only the points
of that request. Reconnects use the same backoff. A failed read never carries the last good
value: it is NaN with quality BAD and its cause (`gateway.inputs.quality`). A device whose circuit
is half-open gets a single try per request, so a dead unit costs its bus one timeout per
backoff. A device's `pause` keeps the bus quiet that long after each of its requests.

Answers: a response counts only if its transaction id, unit and function code are the
request's. pymodbus takes a frame with transaction id 0, or any unit's when the request went to
unit 0, and never looks at the function code: the driver checks all three. A frame pymodbus
skips (another transaction id or unit) leaves the request to time out; if such a frame came,
that poll is `invalid_response`, not `timeout` (the device talks, but not the answer), unless it
was a late answer to one of the last requests.

Timestamps: source = gateway = the time each response arrived (Modbus carries none), to the
millisecond: a finer digit would be the network's jitter, and the historians store what is
stamped (InfluxDB at the precision of the stamps).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field

import numpy as np
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.client.base import ModbusBaseClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from anomaly.core.batch import Batch, Quality
from gateway.inputs import quality
from gateway.inputs.backoff import backoff
from gateway.inputs.devices import device_status, points_by_device
from gateway.inputs.modbus import responses
from gateway.inputs.modbus.plan import DevicePlan, Request, plan_device
from gateway.site.model import Device, Site
from gateway.status import DeviceState, DeviceStatus, GatewayStatus
from timegrammar import now_ns

log = logging.getLogger(__name__)

Emit = Callable[[Batch], Awaitable[None]]

TID_WRAP = 65000  # pymodbus numbers its requests 1..65000, then 1 again
LATE_TIDS = 16  # a frame with one of the last this many transaction ids is a late answer
# Causes after which the device (or the link) is taken as unreachable: stop this poll.
_UNREACHABLE = frozenset({
    quality.TIMEOUT,
    quality.CONNECTION,
    quality.modbus_exception(10),  # gateway path unavailable
    quality.modbus_exception(11),  # gateway target device failed to respond
})


@dataclass(eq=False)
class _Device:
    cfg: Device
    plan: DevicePlan
    status: DeviceStatus
    registers: np.ndarray
    bits: np.ndarray
    deadline: float = 0.0
    failures: int = 0  # consecutive polls that found the device unreachable
    open_until: float = 0.0
    state: DeviceState = "unknown"

    @classmethod
    def of(cls, cfg: Device, plan: DevicePlan, status: DeviceStatus) -> _Device:
        registers, bits = plan.buffers()
        return cls(cfg, plan, status, registers, bits)


@dataclass(eq=False)
class _Link:
    """One connection of a bus, with its reconnect backoff and request pacing."""

    number: int
    client: ModbusBaseClient | None = None
    timeout: float = 0.0
    failures: int = 0
    retry_at: float = 0.0
    quiet_until: float = 0.0  # no request before this (loop time): the devices' `pause`
    connects: int = 0
    read: dict[int, Callable] = field(default_factory=dict)
    stray: bool = False  # a frame that was not the answer came since the last request left


class ModbusBus:
    """Polls the devices of one bus until cancelled."""

    def __init__(self, key: str, devices: list[_Device], emit: Emit, connections: int = 1):
        self.key = key
        self.name = key  # "tcp:127.0.0.1:5020", "rtu:/dev/ttyUSB0"
        self.devices = devices
        self.emit = emit
        self.links = [_Link(i) for i in range(connections)]
        self._heap: list[tuple[float, int, _Device]] = []
        self._seq = itertools.count()
        self._wake: asyncio.Event | None = None

    async def run(self) -> None:
        """Poll every device at its interval until cancelled."""
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        now = loop.time()
        self._heap = []
        for d in self.devices:
            d.deadline = now
            heapq.heappush(self._heap, (d.deadline, next(self._seq), d))
        workers = [asyncio.create_task(self._work(link), name=f"modbus {self.key}#{link.number}")
                   for link in self.links]
        try:
            await asyncio.gather(*workers)
        finally:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            await self.close()

    def replace_devices(self, keep: Collection[str], add: ModbusBus | None) -> None:
        """Poll from now on the devices named in `keep` as before (same schedule, circuit
        breaker and connection) and those of `add` (a bus built for the same link, never run)
        at once; any other device is polled no more (a poll in flight finishes)."""
        added = [] if add is None else add.devices
        self.devices = [d for d in self.devices if d.cfg.name in keep] + added
        live = set(map(id, self.devices))
        self._heap = [e for e in self._heap if id(e[2]) in live]
        heapq.heapify(self._heap)
        if self._wake is not None:  # running
            now = asyncio.get_running_loop().time()
            for d in added:
                d.deadline = now
                heapq.heappush(self._heap, (now, next(self._seq), d))
            self._wake.set()

    async def close(self) -> None:
        for link in self.links:
            if link.client is not None:
                link.client.close()
                link.client = None

    # -- scheduling ------------------------------------------------------------------------

    async def _work(self, link: _Link) -> None:
        me = asyncio.current_task()
        assert me is not None
        while True:
            if me.cancelling():
                # Python 3.11's wait_for (inside pymodbus) can swallow a cancel that lands
                # as a response completes; the request is still pending on the task.
                raise asyncio.CancelledError
            dev = await self._next_due()
            try:
                await self._poll(dev, link)
            finally:
                self._reschedule(dev)

    async def _next_due(self) -> _Device:
        loop = asyncio.get_running_loop()
        assert self._wake is not None
        while True:
            delay = None
            if self._heap:
                delay = self._heap[0][0] - loop.time()
                if delay <= 0:
                    return heapq.heappop(self._heap)[2]
            if len(self.links) == 1 and delay is not None:
                await asyncio.sleep(delay)
                continue
            # Another link may put back a device due sooner than the one we wait for.
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    def _reschedule(self, dev: _Device) -> None:
        if not any(d is dev for d in self.devices):
            return  # replaced while its poll was in flight
        interval = dev.cfg.poll_interval
        dev.deadline += interval
        behind = asyncio.get_running_loop().time() - dev.deadline
        if behind >= interval:
            dev.deadline += (behind // interval) * interval
        heapq.heappush(self._heap, (dev.deadline, next(self._seq), dev))
        if self._wake is not None:
            self._wake.set()

    # -- polling ---------------------------------------------------------------------------

    async def _poll(self, dev: _Device, link: _Link) -> None:
        loop = asyncio.get_running_loop()
        if dev.open_until > loop.time():
            return
        if not await self._connect(link, dev):
            await self._emit_failed(dev, quality.CONNECTION)
            self._unreachable(dev, quality.CONNECTION)
            return
        n = len(dev.plan.requests)
        codes = np.zeros(n, dtype=np.uint32)
        stamps = np.empty(n, dtype=np.int64)
        unreachable = quality.OK
        for i, req in enumerate(dev.plan.requests):
            code = await self._request(link, dev, req)
            stamps[i] = now_ns()
            codes[i] = code
            if code in _UNREACHABLE:  # the rest would wait out their timeouts too
                codes[i:], stamps[i:], unreachable = code, stamps[i], code
                break
        await self._emit_poll(dev, codes, stamps)
        if int(codes[0]) not in _UNREACHABLE:  # the device answered
            dev.status.last_success = time.time()
        if unreachable:
            self._unreachable(dev, unreachable)
            return
        dev.failures = 0
        failed = np.flatnonzero(codes)
        if len(failed):
            self._set_state(dev, "degraded", quality.cause_name(int(codes[failed[0]])))
        else:
            self._set_state(dev, "ok")

    async def _request(self, link: _Link, dev: _Device, req: Request) -> int:
        """Send one read (with retries); copy its answer into the poll buffers; a cause code."""
        client = link.client
        assert client is not None
        loop = asyncio.get_running_loop()
        if link.timeout != dev.cfg.timeout:
            # One client serves every unit id of the bus; each has its own timeout.
            client.ctx.comm_params.timeout_connect = link.timeout = dev.cfg.timeout
        code = quality.OK
        # A device on probation (circuit half-open) gets one try: it must not hold the bus.
        for _ in range(1 if dev.failures else dev.cfg.retries + 1):
            wait = link.quiet_until - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            started = time.perf_counter()
            try:
                rr = await link.read[req.function_code](
                    req.address, count=req.count, device_id=dev.cfg.unit)
            except (ConnectionException, OSError):
                code = quality.CONNECTION
            except ModbusIOException as e:
                code = (quality.TIMEOUT if "No response" in str(e) and not link.stray
                        else quality.INVALID_RESPONSE)
            except ModbusException:
                code = quality.INVALID_RESPONSE
            else:
                dev.status.observe_request(time.perf_counter() - started)
                code = self._store(dev, req, rr, client.ctx.request_transaction_id)
            if dev.cfg.pause:
                link.quiet_until = loop.time() + dev.cfg.pause
            if code == quality.OK:
                return code
            dev.status.count_error(quality.cause_name(code))
            if not client.connected:
                self._drop(link, dev)
                return quality.CONNECTION
            if code >= quality.MODBUS_EXCEPTION_BASE and code not in _UNREACHABLE:
                return code  # the device answered: asking again gets the same answer
        return code

    @staticmethod
    def _store(dev: _Device, req: Request, rr: ModbusPDU, tid: int) -> int:
        """Copy the answer `rr` to request `req` (sent as transaction `tid`) into the poll
        buffers; a cause code."""
        if (rr.transaction_id != tid or rr.dev_id != dev.cfg.unit
                or rr.function_code & 0x7F != req.function_code):
            return quality.INVALID_RESPONSE
        if rr.isError():
            return quality.modbus_exception(getattr(rr, "exception_code", 0))
        if req.function_code <= 2:
            if len(rr.bits) < req.count:
                return quality.INVALID_RESPONSE
            dev.bits[req.offset:req.offset + req.count] = rr.bits[:req.count]
        else:
            if len(rr.registers) != req.count:
                return quality.INVALID_RESPONSE
            dev.registers[req.offset:req.offset + req.count] = rr.registers
        return quality.OK

    # -- connections -----------------------------------------------------------------------

    async def _connect(self, link: _Link, dev: _Device) -> bool:
        """Whether `link` is connected, connecting it if its backoff allows."""
        if link.client is not None and link.client.connected:
            return True
        loop = asyncio.get_running_loop()
        if loop.time() < link.retry_at:
            return False
        if link.client is None:
            link.client = self._client(dev.cfg, functools.partial(self._heard, link))
            link.timeout = dev.cfg.timeout
            c = link.client
            responses.register(c)
            link.read = {1: c.read_coils, 2: c.read_discrete_inputs,
                         3: c.read_holding_registers, 4: c.read_input_registers}
        link.client.ctx.comm_params.timeout_connect = link.timeout = dev.cfg.timeout
        if await link.client.connect():
            if link.connects:
                for d in self.devices:
                    d.status.reconnects_total += 1
            link.connects += 1
            log.info("event=connected bus=%s link=%d failures=%d", self.key, link.number,
                     link.failures)
            link.failures = 0
            return True
        link.failures += 1
        delay = backoff(link.failures, dev.cfg.poll_interval)
        link.retry_at = loop.time() + delay
        if link.failures == 1:
            log.warning("event=connect_failed bus=%s link=%d backoff=%.3f", self.key,
                        link.number, delay)
        return False

    def _drop(self, link: _Link, dev: _Device) -> None:
        log.warning("event=disconnected bus=%s link=%d device=%s", self.key, link.number,
                    dev.cfg.name)
        if link.client is not None:
            link.client.close()

    def _client(self, d: Device, trace: Callable[[bool, bytes], bytes]) -> ModbusBaseClient:
        # retries=0 and reconnect_delay=0: retries and reconnects are ours (with backoff).
        if d.protocol == "modbus-rtu":
            assert d.serial_port is not None
            return AsyncModbusSerialClient(
                d.serial_port, baudrate=d.baudrate, parity=d.parity, stopbits=d.stopbits,
                bytesize=d.bytesize, timeout=d.timeout, retries=0, reconnect_delay=0,
                name=self.key)
        return AsyncModbusTcpClient(d.host, port=d.port, timeout=d.timeout, retries=0,
                                    reconnect_delay=0, name=self.key, trace_packet=trace)

    @staticmethod
    def _heard(link: _Link, sending: bool, data: bytes) -> bytes:
        """pymodbus' packet trace (TCP): notes a received frame that is not the answer to
        the request in flight, nor a late answer to a recent one. `data` is the receive
        buffer, which starts at a frame."""
        if sending:
            link.stray = False
        elif len(data) >= 7 and link.client is not None:
            ctx = link.client.ctx
            tid, unit = int.from_bytes(data[:2], "big"), data[6]
            late = tid != 0 and 0 < (ctx.request_transaction_id - tid) % TID_WRAP <= LATE_TIDS
            if (tid != ctx.request_transaction_id and not late) or unit != ctx.request_dev_id:
                link.stray = True
        return data

    # -- results ---------------------------------------------------------------------------

    async def _emit_poll(self, dev: _Device, codes: np.ndarray, stamps: np.ndarray) -> None:
        plan = dev.plan
        rows = plan.request_of_row
        values = plan.decode(dev.registers, dev.bits)
        failed = bool(codes.any())
        if failed:
            cause = codes[rows]
            bad = cause != 0
            values[bad] = np.nan
            quality_ = bad.astype(np.uint8) * np.uint8(Quality.BAD)
        else:
            cause = np.zeros(len(rows), dtype=np.uint32)
            quality_ = np.zeros(len(rows), dtype=np.uint8)
        source_ts = stamps[rows]
        # `point` is the plan's read-only index array, shared by every batch of the device.
        # Modbus carries no timestamps: source = server = gateway = the answer's arrival.
        await self.emit(Batch(source_ts=source_ts, server_ts=source_ts, gateway_ts=source_ts,
                              point=plan.points, value=values, quality=quality_, cause=cause))
        dev.status.polls_total += 1
        dev.status.poll_errors_total += failed
        dev.status.readings_total += len(rows)

    async def _emit_failed(self, dev: _Device, cause: int) -> None:
        """Every point of `dev` bad with `cause`, without asking the device."""
        n = len(dev.plan)
        stamps = np.full(n, now_ns(), dtype=np.int64)
        await self.emit(Batch(
            source_ts=stamps,
            server_ts=stamps,
            gateway_ts=stamps,
            point=dev.plan.points,
            value=np.full(n, np.nan),
            quality=np.full(n, Quality.BAD, dtype=np.uint8),
            cause=np.full(n, cause, dtype=np.uint32),
        ))
        dev.status.polls_total += 1
        dev.status.poll_errors_total += 1
        dev.status.readings_total += n

    def _unreachable(self, dev: _Device, cause: int) -> None:
        """Open the device's circuit breaker for a growing backoff."""
        dev.failures += 1
        delay = backoff(dev.failures, dev.cfg.poll_interval)
        dev.open_until = asyncio.get_running_loop().time() + delay
        name = quality.cause_name(cause)
        dev.status.last_error = name
        if dev.state != "down":
            log.warning("event=device_down device=%s bus=%s cause=%s backoff=%.3f",
                        dev.cfg.name, self.key, name, delay)
        else:
            log.debug("event=device_probe_failed device=%s cause=%s backoff=%.3f",
                      dev.cfg.name, name, delay)
        dev.state = dev.status.state = "down"

    def _set_state(self, dev: _Device, state: DeviceState, cause: str | None = None) -> None:
        if state != dev.state:
            if state == "ok":
                log.info("event=device_ok device=%s bus=%s was=%s", dev.cfg.name, self.key,
                         dev.state)
            else:
                log.warning("event=device_degraded device=%s bus=%s cause=%s", dev.cfg.name,
                            self.key, cause)
        if cause is not None:
            dev.status.last_error = cause
        dev.state = dev.status.state = state


def build_buses(site: Site, status: GatewayStatus, emit: Emit) -> list[ModbusBus]:
    """One `ModbusBus` per TCP endpoint or serial port of the site's Modbus devices.

    Expects a site that passed the site checks (`load_site`): devices on one serial port
    agree on its line settings, points have addresses and fit their tables. Raises ValueError
    for a point wider than its device's request limit.
    """
    points = points_by_device(site)
    grouped: dict[str, list[_Device]] = {}
    for cfg in site.devices:
        if cfg.protocol not in ("modbus-tcp", "modbus-rtu"):
            continue
        dev_status = device_status(status, cfg)
        dev_status.stale_after_seconds = cfg.stale_after * cfg.poll_interval + cfg.timeout
        plan = plan_device(cfg, points.get(cfg.name, []))
        if plan.requests:
            grouped.setdefault(cfg.bus, []).append(_Device.of(cfg, plan, dev_status))
    return [ModbusBus(bus, devices, emit, max(d.cfg.connections for d in devices)
                      if devices[0].cfg.protocol == "modbus-tcp" else 1)
            for bus, devices in grouped.items()]
