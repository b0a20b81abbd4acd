"""`scadawatch check-config`: validate a site file, print what it holds or every problem."""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from gateway.site.loader import ConfigError, load_site
from gateway.site.model import Site
from gateway.site.rules import clear_text_logins, old_key_names
from scadawatch.cli import EXIT_OK, EXIT_USAGE
from scadawatch.commands.central import is_central_file


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{name} {n}" for name, n in sorted(counter.items()))


def summary(site: Site) -> list[str]:
    """What an engineer checks after editing a site file: names, counts, buses, paths."""
    devices = Counter(d.protocol for d in site.devices)
    kinds = Counter(p.kind for p in site.points)
    unpolled = sum(p.device is None for p in site.points)
    buses: dict[str, list[str]] = {}
    for d in site.devices:
        buses.setdefault(d.bus, []).append(d.name)
    per_device = Counter(p.device for p in site.points)
    lines = [f"site: {site.site.name}",
             f"devices: {len(site.devices)}" + (f" ({_counts(devices)})" if devices else ""),
             f"points: {len(site.points)}" + (f" ({_counts(kinds)})" if kinds else "")
             + (f"; {unpolled} not polled (no device)" if unpolled else ""),
             f"buses: {len(buses)}"]
    for bus, names in buses.items():
        n = sum(per_device[name] for name in names)
        lines.append(f"  {bus}: {', '.join(names)} ({n} point{'' if n == 1 else 's'})")
    if site.site.points_csv is not None:
        lines.append(f"points_csv: {site.site.points_csv}")
    lines += [f"data_dir: {site.site.data_dir}",
              f"historian: {site.historian.kind}",
              f"api: {site.api.host}:{site.api.port}"]
    lines += [f"northbound: {n.kind} {n.group}/{n.node or site.site.name} -> {n.url}"
              for n in site.northbound]
    if site.webhooks:  # names (or hosts) only: a webhook URL may carry a secret
        lines.append(f"webhooks: {len(site.webhooks)} "
                     f"({', '.join(w.key for w in site.webhooks)})")
    lines += [f"warning: devices[{i}] ({d.name}): the password of user {d.username!r} crosses "
              "the network in clear text (security_policy 'None', allow_plaintext_password = "
              "true)" for i, d in clear_text_logins(site.devices)]
    lines += [f"warning: {old} is the old name of {new} (seconds an alarm stays active "
              f"before it counts as stale; a device's stale_after counts polls): rename it"
              for old, new in old_key_names(site.alarms)]
    return lines


def central_summary(path: str) -> list[str]:
    """A central file's (`[central]`) summary; ConfigError lists its problems."""
    from central.config import load_central

    c = load_central(path)
    h = c.historian
    where = (f"embedded, a file per site in {c.site.data_dir / 'sites'}" if h.kind == "embedded"
             else f"influxdb {h.url} ({h.api}: "
             + (f"bucket {h.bucket}" if h.api == "v2" else f"database {h.database}")
             + ", site as a tag)")
    return [f"central: {c.site.name}", f"sparkplug: group {c.central.group}, host_id "
            f"{c.central.host_id} -> {c.central.url}", f"data_dir: {c.site.data_dir}",
            f"historian: {where}", f"api: {c.api.host}:{c.api.port}"]


def main(args: argparse.Namespace) -> int:
    try:
        if is_central_file(args.config):
            lines = central_summary(args.config)
        else:
            lines = summary(load_site(args.config))
    except ConfigError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        n = len(e.problems)
        print(f"{args.config}: {n} problem{'' if n == 1 else 's'}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{args.config}: OK")
    print("\n".join(lines))
    return EXIT_OK
