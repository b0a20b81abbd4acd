"""`scadawatch token create | list | revoke`: the API's bearer tokens in the site's data_dir."""

from __future__ import annotations

import argparse
import sys
import time

from api.tokens import TokenError, TokenStore
from scadawatch.cli import EXIT_OK, UsageError
from scadawatch.commands import central
from scadawatch.commands.serve import load


def main(args: argparse.Namespace) -> int:
    # A central file's tokens are the central API's, in its data_dir as a site's are.
    config = central.load(args.config) if central.is_central_file(args.config) else load(
        args.config)
    store = TokenStore(config.site.data_dir)
    try:
        if args.action == "create":
            token, secret = store.create(args.role, args.name, args.expires)
            # The token alone on stdout, so that `TOKEN=$(scadawatch token create ...)` works.
            print(secret, flush=True)
            print(f"token {token.name!r} ({token.role}, "
                  f"{'expires ' + token.expires if token.expires else 'no expiry'}) stored in "
                  f"{store.path}; it is shown only now: keep it in a password manager or a "
                  "secret store", file=sys.stderr)
        elif args.action == "list":
            rows = [("NAME", "ROLE", "CREATED", "EXPIRES", "TOKEN")]
            now = time.time()
            rows += [(t.name, t.role, t.created,
                      (t.expires or "never") + (" (expired)" if t.expired(now) else ""),
                      "sw_..." + t.last4) for t in store.read()]
            if len(rows) == 1:
                print(f"no tokens in {store.path}", file=sys.stderr)
                return EXIT_OK
            widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
            for r in rows:
                print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        else:
            token = store.revoke(args.name)
            print(f"token {token.name!r} ({token.role}) revoked", file=sys.stderr)
    except TokenError as e:
        raise UsageError(str(e)) from None
    return EXIT_OK
