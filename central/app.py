"""The central API: the site API (`api.app.create_app`) over every site at once, a site's tag
`t` served as `<site>/t` (zones and devices likewise; alarm ids as `<site>:<id>`), with the
sites as the health's devices (a site online is `ok`, a dead one `down`) and
`GET /api/v1/sites`: each site's link state and worst active alarm."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from starlette.routing import Mount

from api.app import ACCESS, PREFIX, STATUS_STALE_AFTER, create_app
from api.context import ApiContext
from api.security.auth import VIEWER, GuardedRoute
from central.host import Central, historian_file, prefixed
from central.links import SiteLink
from central.reader import CentralReader, SiteReader
from gateway.alarms.store import Filter, rank
from gateway.site.model import Point, Site
from gateway.status import DeviceStatus, GatewayStatus
from gateway.storage.historian import EmbeddedHistorian
from timegrammar.iso import iso


def _served(central: Central) -> list[tuple[str, SiteLink]]:
    """The sites the API shows: those whose historian holds readings (open and readable)."""
    return [(n, central.links[n]) for n in sorted(central.served)]


def central_site(central: Central) -> Site:
    """The central's points: every site's, prefixed with the site's name."""
    points = [Point(tag=f"{node}/{p.tag}", device=prefixed(node, p.device), kind=p.kind,
                    unit=p.unit, zone=prefixed(node, p.zone), lo=p.lo, hi=p.hi)
              for node, link in _served(central) for p in link.points]
    c = central.config
    return Site(site=c.site, api=c.api, historian=c.historian, points=points)


def reader_of(central: Central) -> CentralReader:
    readers: dict[str, SiteReader] = {}
    for node, link in _served(central):
        tags = [p.tag for p in link.points]
        if not tags:
            continue
        if central.influx is not None:
            from gateway.storage.influxdb.reader import InfluxReader

            readers[node] = InfluxReader(central.influx.site(node, link.points), site_tag=node)
        elif (path := historian_file(central.data_dir, node)).exists():
            readers[node] = EmbeddedHistorian(path, tags, readonly=True)
    return CentralReader(readers)


def status_of(central: Central) -> dict:
    """The centre's status as a gateway's: its sites as devices, its MQTT intake as a sink."""
    st = GatewayStatus(site=central.config.site.name)
    for node, link in sorted(central.links.items()):
        st.devices[node] = DeviceStatus(
            name=node, protocol="sparkplug", bus=central.settings.url,
            state="ok" if link.online else "down",
            last_success=None if link.born_ns is None else link.born_ns / 1e9,
            last_error=None if link.online else "no Sparkplug session (NDEATH or never born)",
            readings_total=link.readings_total)
    st.sinks[central.status.name] = central.status
    return st.snapshot()


def sites(request: Request) -> list[dict]:
    central: Central = request.app.state.central
    open_, _ = central.alarms.alarms(Filter(states=("active",)), limit=100_000)
    worst: dict[str, dict] = {}
    count: dict[str, int] = {}
    for a in open_:  # highest priority first, newest first
        node = a["id"].partition(":")[0]
        count[node] = count.get(node, 0) + 1
        if node not in worst or rank(a["priority"]) > rank(worst[node]["priority"]):
            worst[node] = a
    return [{"site": node, "online": link.online, "bd_seq": link.bd_seq,
             "born": None if link.born_ns is None
             else iso(link.born_ns, "s"),
             "died": None if link.died_ns is None
             else iso(link.died_ns, "s"),
             "points": len(link.points), "readings_total": link.readings_total,
             "duplicates_dropped_total": link.duplicates_total,
             "active_alarms": count.get(node, 0),
             "worst_alarm": None if node not in worst else
             {k: worst[node][k] for k in ("id", "kind", "priority", "message", "tag")}}
            for node, link in sorted(central.links.items())]


def create_central_app(central: Central) -> FastAPI:
    def status() -> dict:
        return status_of(central)

    app = create_app(central_site(central), reader_of(central), status,
                     alarm_store=central.alarms)
    app.state.central = central
    # The overview route, guarded like the others, ahead of the page's catch-all mount.
    app.state.guard.access = {**ACCESS, "GET /sites": VIEWER}
    router = APIRouter(route_class=GuardedRoute)
    router.add_api_route("/sites", sites, methods=["GET"],
                         summary="Every site: link state (Sparkplug session), points, "
                                 "readings, active alarms and the worst of them")
    app.include_router(router, prefix=PREFIX, dependencies=app.state.guard.dependencies)
    routes = app.router.routes
    pages = [r for r in routes if isinstance(r, Mount) and r.path == ""]
    for r in pages:
        routes.remove(r)
        routes.append(r)
    app.state.guard.verify(app)

    def refresh() -> None:
        """A site's births changed the points: the routes read the new ones from now on."""
        app.state.context = ApiContext(central_site(central), reader_of(central), status,
                                       STATUS_STALE_AFTER)

    central.on_points.append(refresh)
    return app
