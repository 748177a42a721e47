"""Is the gateway's clock synchronised? (Every sample's time comes from it.)"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from pathlib import Path
from typing import Final

__all__ = ["clock_synchronised"]

_TIME_ERROR: Final = 5  # adjtimex(2): clock not synchronised (STA_UNSYNC)
_TIMEX_SIZE: Final = 512  # struct timex is 208 bytes on 64-bit Linux; room to spare


_TIMESYNCD_FLAG: Final = Path("/run/systemd/timesync/synchronized")


def clock_synchronised() -> bool | None:
    """True/False from the kernel's NTP state (``adjtimex``), None where that cannot be asked.

    Under systemd's ``ProtectClock=``/``@system-service`` seccomp filter ``adjtimex`` is refused; then
    systemd-timesyncd's flag file answers (present once it has synchronised).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        buffer = ctypes.create_string_buffer(_TIMEX_SIZE)  # modes = 0: read only
        state = libc.adjtimex(buffer)
    except (OSError, AttributeError):
        state = -1
    if state < 0:
        return True if _TIMESYNCD_FLAG.exists() else None
    return bool(state != _TIME_ERROR)
