"""Permissions of what the tools write: those of any Unix tool, 0666 / 0777 less the umask.

Outputs are written through temporary files and folders (mkstemp, mkdtemp) and renamed into place; those are
created 0600 / 0700, which would leave every result readable by its writer only (other users, a PACS bridge).
The umask is read once, at import: reading it means setting it, which is not safe while other threads create files.
"""

from __future__ import annotations

import os


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _read_umask()
FILE_MODE = 0o666 & ~UMASK
FOLDER_MODE = 0o777 & ~UMASK
