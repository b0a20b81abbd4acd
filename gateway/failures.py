"""Why a part of the gateway failed, as the short name health, metrics and logs give it.

>>> import errno
>>> cause_of(OSError(errno.ENOSPC, "No space left on device"))
'disk_full'
>>> cause_of(RuntimeError("x"))
'runtime_error'
"""

from __future__ import annotations

import errno
import re
import sqlite3

DISK_FULL = "disk_full"
FD_EXHAUSTED = "fd_exhausted"  # the process's file-descriptor limit (EMFILE), or the system's
READ_ONLY = "read_only"
IO_ERROR = "io_error"

_ERRNOS = {errno.ENOSPC: DISK_FULL, errno.EDQUOT: DISK_FULL, errno.EFBIG: DISK_FULL,
           errno.EMFILE: FD_EXHAUSTED, errno.ENFILE: FD_EXHAUSTED, errno.EROFS: READ_ONLY,
           errno.EIO: IO_ERROR}
# SQLite's primary result codes (sqlite3.h) that say the same.
_SQLITE = {13: DISK_FULL, 10: IO_ERROR, 8: READ_ONLY}  # SQLITE_FULL, _IOERR, _READONLY


def cause_of(exc: BaseException) -> str:
    """The cause of `exc`, or of the error it was raised from: `disk_full`, `fd_exhausted`,
    `read_only`, `io_error`; else the exception's type in snake_case."""
    seen: BaseException | None = exc
    for _ in range(8):  # an exception's chain is short; a cycle must not hang us
        if seen is None:
            break
        if isinstance(seen, OSError) and seen.errno in _ERRNOS:
            return _ERRNOS[seen.errno]
        code = getattr(seen, "sqlite_errorcode", None)
        if isinstance(seen, sqlite3.Error) and code is not None and code & 0xFF in _SQLITE:
            return _SQLITE[code & 0xFF]
        seen = seen.__cause__ or seen.__context__
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()
