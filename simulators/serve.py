"""Serving a simulated site live: its clock, its physics steps and its protocol servers.

Simulated time runs at `speed` times wall-clock time from the site's current time (speed 0
freezes it). The physics steps ahead of the clock in whole `site.step`s, in a worker thread so
the servers keep answering; a sample is published to Modbus, OPC UA and IEC 104 every
`update_interval` wall seconds and after every physics step, all from the same sample array.
When the physics cannot keep up with `speed`, simulated time lags behind rather than skipping
steps, and a log line says so once.
"""

from __future__ import annotations

import asyncio
import logging
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType

import numpy as np

from simulators.servers.iec104_server import Iec104SiteServer
from simulators.servers.modbus_server import ModbusSiteServer
from simulators.servers.opcua_server import OpcUaSiteServer, namespace_uri
from simulators.site import SimulatedSite, iso_us

log = logging.getLogger("scadawatch.simulate")


class SiteServer:
    """A site served over Modbus TCP, OPC UA and IEC 104 while `run` drives its clock.

    Use as an async context manager: entering opens the servers and publishes the sample at
    the site's current time; leaving closes them.
    """

    def __init__(self, site: SimulatedSite, *, host: str = "127.0.0.1", modbus_port: int = 5020,
                 opcua_port: int = 4840, iec104_port: int = 2404, speed: float = 1.0,
                 update_interval: float = 1.0, opcua_pki: Path | None = None,
                 opcua_trust_all_clients: bool = False, wall_timestamps: bool = False) -> None:
        if not (speed >= 0 and math.isfinite(speed)):
            raise ValueError(f"speed must be a finite number >= 0, not {speed}")
        if not (update_interval > 0 and math.isfinite(update_interval)):
            raise ValueError(f"update_interval must be a positive number, not {update_interval}")
        self.site = site
        self.speed = speed
        self.update_interval = update_interval
        # OPC UA source timestamps and IEC 104 time tags: the sample's simulated time, or (a
        # field device's clock) the wall-clock time it was served, for a gateway beside Modbus
        # devices at any speed
        self.wall_timestamps = wall_timestamps
        self.modbus = ModbusSiteServer(site.signals, host=host, port=modbus_port)
        self.opcua = OpcUaSiteServer(site.name, site.signals, host=host, port=opcua_port,
                                     pki_dir=opcua_pki,
                                     trust_all_clients=opcua_trust_all_clients)
        self.iec104 = Iec104SiteServer(site.name, site.signals, host=host, port=iec104_port)
        self.time: float | None = None  # simulated time of the sample being served
        self._unit_of = np.array([s.unit_id for s in site.signals])
        self._comms: dict[str, str] = dict.fromkeys(site.devices, "ok")
        self._lag_reported = False

    async def __aenter__(self) -> SiteServer:
        await self.modbus.start()
        try:
            await self.opcua.start()
            await self.iec104.start()
            await self.publish(self.site.time)
        except BaseException:
            await self.close()
            raise
        log.info("event=serving_started site=%s modbus=%s:%d units=%d opcua=%s namespace=%s "
                 "iec104=%s:%d signals=%d speed=%g sim_start=%s", self.site.name, self.modbus.host,
                 self.modbus.port, len(self.site.devices), self.opcua.endpoint,
                 namespace_uri(self.site.name), self.iec104.host, self.iec104.port,
                 len(self.site.signals), self.speed,
                 iso_us(self.site.start + timedelta(seconds=self.site.time)))
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()
        log.info("event=serving_stopped site=%s sim_time=%s modbus_requests=%d",
                 self.site.name, self._iso(self.time or 0.0), self.modbus.requests.total())

    async def close(self) -> None:
        await self.iec104.stop()
        await self.opcua.stop()
        await self.modbus.stop()

    async def publish(self, t: float) -> None:
        """Serve the site's sample at simulated time t on every server.

        Served time never goes back: a t at or before the one being served is ignored (a
        frozen or lagging clock, or a caller that published ahead of the clock).
        """
        if self.time is not None and t <= self.time:
            return
        site = self.site
        values = site.sample(t)
        faulty = []
        for device, unit in site.devices.items():
            state = site.comms_state(device, t)
            if state != self._comms[device]:
                log.info("event=comms_state site=%s device=%s unit=%d state=%s sim_time=%s",
                         site.name, device, unit, state, self._iso(t))
                self._comms[device] = state
            if state != "ok":
                faulty.append(unit)
        self.time = t
        self.modbus.publish(values, {site.devices[d]: s for d, s in self._comms.items()})
        fault = np.isin(self._unit_of, faulty)
        moment = datetime.now(UTC) if self.wall_timestamps else site.start + timedelta(seconds=t)
        self.iec104.publish(values, fault, moment)
        await self.opcua.publish(values, fault, moment)

    async def run(self, duration: float | None = None) -> None:
        """Drive the clock for `duration` wall seconds (None: until cancelled)."""
        loop = asyncio.get_running_loop()
        site = self.site
        t0 = loop.time()
        sim0 = self.time if self.time is not None else site.time
        end = math.inf if duration is None else t0 + duration
        next_update = t0 + self.update_interval
        while (now := loop.time()) < end:
            clock = sim0 + (now - t0) * self.speed
            if clock > site.time:
                # A reading interpolates between the physics states around it, so the physics
                # must be a step ahead of the clock.
                await loop.run_in_executor(None, site.advance, site.step)
                await self.publish(min(sim0 + (loop.time() - t0) * self.speed, site.time))
                done = loop.time()
                self._check_lag(sim0 + (done - t0) * self.speed, done - now)
            elif now >= next_update:
                await self.publish(clock)
                next_update += self.update_interval
                if next_update <= now:  # after a long physics step: no burst of catch-up ticks
                    next_update = now + self.update_interval
            else:
                wake = min(next_update, end)
                if self.speed > 0:
                    wake = min(wake, t0 + (site.time - sim0) / self.speed)
                await asyncio.sleep(max(wake - now, 0.0))

    def _check_lag(self, clock: float, step_wall: float) -> None:
        """Say once that the physics falls behind; `step_wall`: one step and its publish."""
        behind = clock - self.site.time
        if behind > self.site.step and not self._lag_reported:
            self._lag_reported = True
            log.warning("event=physics_lagging site=%s speed=%g step_s=%g step_wall_s=%.3f "
                        "max_speed=%.0f behind_s=%.0f", self.site.name, self.speed,
                        self.site.step, step_wall, self.site.step / max(step_wall, 1e-9), behind)

    def _iso(self, t: float) -> str:
        return iso_us(self.site.start + timedelta(seconds=t))


async def serve(site: SimulatedSite, *, host: str = "127.0.0.1", modbus_port: int = 5020,
                opcua_port: int = 4840, iec104_port: int = 2404, speed: float = 1.0,
                duration: float | None = None,
                update_interval: float = 1.0, ready: asyncio.Event | None = None,
                opcua_pki: Path | None = None, opcua_trust_all_clients: bool = False,
                wall_timestamps: bool = False) -> None:
    """Serve `site` over Modbus TCP, OPC UA and IEC 104 until `duration` wall seconds or
    cancellation.

    With `opcua_pki`, the OPC UA server also offers Basic256Sha256 (Sign, SignAndEncrypt) with
    its certificate in `<opcua_pki>/own/`, trusting the client certificates in
    `<opcua_pki>/trusted/` (or any, with `opcua_trust_all_clients`).
    """
    async with SiteServer(site, host=host, modbus_port=modbus_port, opcua_port=opcua_port,
                          iec104_port=iec104_port, speed=speed,
                          update_interval=update_interval, opcua_pki=opcua_pki,
                          opcua_trust_all_clients=opcua_trust_all_clients,
                          wall_timestamps=wall_timestamps) as server:
        if ready is not None:
            ready.set()
        await server.run(duration)
