"""One writer per folder: an exclusive ``flock`` held while a command writes there, released however it ends."""
from __future__ import annotations

import os
from pathlib import Path


def lock_folder(folder: Path, lock_name: str, busy: type[Exception], what: str, flag: str = "--out"):
    """The open lock file ``folder/lock_name`` once locked (close it to release; None where ``fcntl`` is missing).

    A second holder gets ``busy`` with one line naming the folder, the process holding it and what to do.
    """
    try:
        import fcntl
    except ImportError:  # not a POSIX system: no lock
        return None
    f = open(Path(folder) / lock_name, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip()
        f.close()
        who = f" (process {holder})" if holder.isdigit() else ""
        raise busy(f"{flag} {folder}: another {what}{who} is writing to this folder; wait for it to end or choose "
                   f"another {flag}") from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f
