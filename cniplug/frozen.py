"""The entry point of the self-contained runtime (`cniplug bundle`, PyInstaller): one executable, `cniplug`,
that is every plugin too. Installed plugin executables are symlinks to it (bundle.install), so the name it
was started under says what to run: a plugin type runs that plugin (through the install's helper, as
the Python wrappers do, fastpath.main), anything else is the `cniplug` command.

The install's helper settings sit beside the executable in `install.conf` (lines `key=value`: socket,
idle), written by the install that made this directory; no file means no helper is started.
"""

import posix
import sys


def install_settings(exe: str) -> dict[str, object] | None:
    """The `auto` settings fastpath.main takes, from `install.conf` beside `exe`; None if there is none."""
    conf = exe.rpartition("/")[0] + "/install.conf"
    try:
        fd = posix.open(conf, posix.O_RDONLY)
    except OSError:
        return None
    try:
        text = posix.read(fd, 4096).decode()
    finally:
        posix.close(fd)
    values = dict(line.partition("=")[::2] for line in text.splitlines() if "=" in line)
    if not values.get("socket") or not values.get("idle", "").isdigit():
        return None
    return {"socket": values["socket"], "idle": int(values["idle"]), "paths": [], "metrics": values.get("metrics", "")}


def main() -> None:
    name = sys.argv[0].rpartition("/")[2]
    from cniplug.plugins import PLUGINS  # a dict literal: cheap (cli would import argparse)

    if name in PLUGINS:
        from cniplug.fastpath import main as plugin_main

        plugin_main(name, PLUGINS[name], install_settings(sys.executable))
        return
    from cniplug.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
