"""/run/cniplug: the one directory cniplug keeps runtime state in (bridge locks, the Jinja cache, the
helper's socket). Whoever gets there first creates it, so every path goes through `ensure`.
"""

from __future__ import annotations

import os
import stat

RUN_DIR = "/run/cniplug"


def ensure(sub: str = "") -> str:
    """Create RUN_DIR (and RUN_DIR/sub when given) as directories of mode 0700; return the path.

    An existing directory owned by this user with a looser mode is tightened to 0700 (another path or an
    older version may have created it with the umask's 0755). Raises PermissionError when the path is a
    symlink, not a directory, or owned by another user (nothing is changed then), OSError when it cannot
    be created. The rule: the lock files and the cached template code must be root's alone (issue #12).
    """
    path = RUN_DIR
    for part in ([sub] if sub else []):
        _private_dir(path)
        path = os.path.join(path, part)
    _private_dir(path)
    return path


def _private_dir(path: str) -> None:
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise PermissionError(f"{path} is not a directory owned by uid {os.geteuid()}")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)
