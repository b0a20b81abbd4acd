"""API tokens: made, listed and revoked by `scadawatch token`, checked by the API.

A token is `sw_` and 43 random URL-safe characters (256 bits), shown once when made. The store,
`<data_dir>/tokens.json` (mode 0600), keeps its SHA-256 (for a secret of that entropy a salt or a
slow hash adds nothing), name, role, creation and expiry times and last four characters. Writers
take a lock and replace the file atomically; a reader (the API, maybe in another process) reloads
it when it changes, so a new or revoked token counts from the next request on, without a restart.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, get_args

from gateway.data_dir import TOKENS, write_atomically
from timegrammar import NS
from timegrammar.iso import iso

log = logging.getLogger(__name__)

Role = Literal["viewer", "operator", "engineer", "admin"]
ROLES: tuple[Role, ...] = get_args(Role)  # each role may do all that the roles before it may
TOKEN_PREFIX = "sw_"
MAX_DAYS = 36525  # a century: beyond that, leave the expiry out
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class TokenError(Exception):
    """A bad name, role or expiry, an unknown or duplicate name, or an unreadable store."""


def outranks(role: Role, least: Role) -> bool:
    """Whether `role` may do what `least` may."""
    return ROLES.index(role) >= ROLES.index(least)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Token:
    """What the store keeps of a token: never the token itself."""

    name: str
    role: Role
    sha256: str
    last4: str
    created: str  # ISO 8601 UTC
    expires: str | None  # ISO 8601 UTC; None: never

    def expired(self, now: float) -> bool:
        return self.expires is not None and datetime.fromisoformat(self.expires).timestamp() <= now


class TokenStore:
    """The tokens of one data dir."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / TOKENS
        self._seen: tuple[int, int, int] | None = None  # (inode, mtime ns, size) last loaded
        self._cached: list[Token] = []

    def read(self) -> list[Token]:
        """The tokens now in the file (none when there is no file); TokenError naming the file
        when it cannot be read."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except OSError as e:
            raise TokenError(f"{self.path}: cannot read: {e.strerror or e}") from None
        try:
            rows = json.loads(text)["tokens"]
            tokens = [Token(**row) for row in rows]
        except (ValueError, KeyError, TypeError) as e:
            raise TokenError(f"{self.path}: not a token store ({e}); restore it from a backup "
                             "or delete it and create the tokens again") from None
        if bad := [t.name for t in tokens if t.role not in ROLES]:
            raise TokenError(f"{self.path}: unknown role in token {bad[0]!r}")
        return tokens

    def current(self) -> list[Token]:
        """The tokens as of the file's last change, re-read only when it changed. An unreadable
        store grants nothing (logged once per change): failing closed beats guessing."""
        try:
            st = os.stat(self.path)
            seen: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            seen = None
        if seen != self._seen:
            try:
                self._cached = self.read() if seen else []
                log.info("event=tokens_loaded path=%s count=%d", self.path, len(self._cached))
            except TokenError as e:
                self._cached = []
                log.error("event=tokens_unreadable reason=%r", str(e))
            self._seen = seen
        return self._cached

    def check(self, secret: str) -> Token | None:
        """The token whose secret this is (expired or not), or None."""
        wanted = digest(secret)
        found = None
        # Compare with every token, in constant time each: the answer's timing says nothing.
        for token in self.current():
            if hmac.compare_digest(token.sha256, wanted):
                found = token
        return found

    def create(self, role: str, name: str | None = None, expires_days: float | None = None, *,
               replace: bool = False, now: float | None = None) -> tuple[Token, str]:
        """A new token of `role` and its secret, which nothing keeps: show it once.

        `name` defaults to `<role>-<n>`; an existing name is an error unless `replace`. `now`
        is the creation time (default: now)."""
        if role not in ROLES:
            raise TokenError(f"role {role!r} is unknown: use {', '.join(ROLES[:-1])} or "
                             f"{ROLES[-1]}")
        if name is not None and not NAME.fullmatch(name):
            raise TokenError(f"name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
                             "starting with a letter or digit")
        if expires_days is not None and not 0 < expires_days <= MAX_DAYS:
            raise TokenError(f"expiry {expires_days:g} days: must be more than 0 and at most "
                             f"{MAX_DAYS} (or none: valid until revoked)")
        created = time.time() if now is None else now
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._locked() as tokens:
            names = {t.name for t in tokens}
            if name is None:
                name = next(f"{role}-{n}" for n in range(1, len(names) + 2)
                            if f"{role}-{n}" not in names)
            elif name in names and not replace:
                raise TokenError(f"a token named {name!r} exists: revoke it first or choose "
                                 "another name")
            token = Token(name=name, role=role, sha256=digest(secret), last4=secret[-4:],
                          created=iso(int(created * NS), "s"),
                          expires=None if expires_days is None
                          else iso(int((created + expires_days * 86400) * NS), "s"))
            tokens[:] = [t for t in tokens if t.name != name] + [token]
        return token, secret

    def revoke(self, name: str) -> Token:
        """Remove the token named `name`; TokenError when there is none."""
        with self._locked() as tokens:
            gone = [t for t in tokens if t.name == name]
            if not gone:
                known = ", ".join(t.name for t in tokens) or "none"
                raise TokenError(f"no token named {name!r} (tokens: {known})")
            tokens[:] = [t for t in tokens if t.name != name]
        return gone[0]

    @contextlib.contextmanager
    def _locked(self) -> Iterator[list[Token]]:
        """The tokens under an exclusive lock; the list as left by the caller is written back
        atomically (a reader sees the old file or the new one, never half of one)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock = os.open(self.path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise TokenError(f"{self.path}: cannot write: {e.strerror or e}") from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            tokens = self.read()
            yield tokens
            self._write(tokens)
        finally:
            os.close(lock)

    def _write(self, tokens: list[Token]) -> None:
        text = json.dumps({"tokens": [asdict(t) for t in tokens]}, indent=1) + "\n"
        try:
            write_atomically(self.path, text.encode(), durable=True, private=True)
        except OSError as e:
            raise TokenError(f"{self.path}: cannot write: {e.strerror or e}") from None
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
