"""The IPAM plugins' --dry-run explains itself in the language asked for, like the interface plugins."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from cniplug import skel
from cniplug.cli import plugin_handlers


@pytest.mark.parametrize("plugin", ["cniplug-host-local", "cniplug-static"])
@pytest.mark.parametrize("verb", ["ADD", "DEL"])
def test_ipam_dry_run_in_chinese(plugin: str, verb: str, tmp_path: Path) -> None:
    ipam = ({"type": plugin, "subnet": "10.243.9.0/24", "dataDir": str(tmp_path)} if plugin.endswith("local")
            else {"type": plugin, "addresses": [{"address": "10.243.9.5/24"}]})
    conf = {"cniVersion": "1.0.0", "name": "n", "type": "x", "ipam": ipam}
    env = {"CNI_COMMAND": verb, "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/x", "CNI_IFNAME": "eth0",
           "CNI_PATH": "/x"}
    handlers, about = plugin_handlers(plugin)
    out = io.StringIO()
    rc = skel.run(handlers, about, argv=["--dry-run", "--lang", "zh"], environ=env,
                  stdin=io.BytesIO(json.dumps(conf).encode()), stdout=out)
    assert rc == 0, out.getvalue()
    comments = [line for line in out.getvalue().splitlines() if line.startswith("# ")]
    assert comments, out.getvalue()
    untranslated = [c for c in comments if not any("\u4e00" <= ch <= "\u9fff" for ch in c)]
    assert not untranslated, untranslated
    assert not list(tmp_path.iterdir()), "a dry run wrote files"
