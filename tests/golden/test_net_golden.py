"""Golden transcripts of `cniplug net --dry-run`: (list, verb, cache, facts) -> the exact script of the whole list.

The list holds two cniplug plugins and a plugin that is not ours (the reference `tuning`): the scripts of
ours nest in it, the foreign exec is commented out. Facts are faked as in test_golden; the cache directory
and NETCONFPATH are the test's own. Regenerate with `pytest tests/golden --update-golden`.
"""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from test_golden import FakeFacts, has_chinese

from cniplug import net

HERE = Path(__file__).parent
NETNS = "/run/netns/golden"

LIST = {
    "name": "gold",
    "plugins": [
        {"type": "cniplug-bridge", "bridge": "cni0", "isGateway": True, "ipMasq": True,
         "ipam": {"type": "cniplug-host-local", "dataDir": "/nonexistent/cniplug-golden",
                  "ranges": [[{"subnet": "10.22.0.0/24"}]]}},
        {"type": "tuning", "capabilities": {"mac": True}, "sysctl": {"net.core.somaxconn": "512"}},
        {"type": "cniplug-loopback"},
    ],
}

CASES = {
    "net-add": ("add", "1.0.0", "en", False),
    "net-add-zh": ("add", "1.0.0", "zh", False),
    "net-del-cached": ("del", "1.0.0", "en", True),
    "net-gc-stale": ("gc", "1.1.0", "en", True),
}


def render(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, verb: str, version: str, lang: str,
           cached: bool) -> str:
    FakeFacts({"iptables": {"4": ["-N CNI-0000", "-A POSTROUTING -s 10.22.0.2/32 -m comment --comment "
                                  "'name: \"gold\" id: \"cnitool-stale\"' -j CNI-0000"]}}).install(monkeypatch)
    monkeypatch.setattr(net, "CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "net.d").mkdir()
    (tmp_path / "bin").mkdir()
    for kind in ("cniplug-bridge", "tuning", "cniplug-loopback"):
        (tmp_path / "bin" / kind).write_text("")
    raw = json.dumps({"cniVersion": version, **LIST}).replace("@TMP@", str(tmp_path)).encode()
    (tmp_path / "net.d" / "10-gold.conflist").write_bytes(raw)
    conflist = net.conflist_from_bytes(raw)
    result = {"cniVersion": version, "interfaces": [{"name": "cni0"}, {"name": "veth0a1b2c3d"},
                                                    {"name": "eth0", "sandbox": NETNS}],
              "ips": [{"address": "10.22.0.2/24", "gateway": "10.22.0.1", "interface": 2}]}
    if cached:  # the attachment of NETNS (DEL), or a stale one of another container (GC)
        cid = net.container_id_of(NETNS) if verb == "del" else "cnitool-stale"
        rt = net.Runtime(cid, NETNS, "eth0", [], {"mac": "02:00:00:00:00:01"})
        net.write_cache(net.cache_path("gold", rt), net.cache_bytes(result, conflist, rt))
    env = {"NETCONFPATH": str(tmp_path / "net.d"), "CNI_PATH": str(tmp_path / "bin"),
           "CAP_ARGS": '{"mac": "02:00:00:00:00:01", "portMappings": []}'}
    out = io.StringIO()
    with redirect_stdout(out):
        assert net.main(verb, "gold", NETNS if verb != "gc" else "", True, lang, env) == 0
    return out.getvalue().replace(str(tmp_path), "@TMP@")


@pytest.mark.parametrize("case", sorted(CASES))
def test_net_golden(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                    request: pytest.FixtureRequest) -> None:
    text = render(tmp_path, monkeypatch, *CASES[case])
    expected = HERE / "expected" / f"{case}.sh"
    if request.config.getoption("--update-golden"):
        expected.write_text(text)
    assert expected.exists(), f"no golden file {expected}: run pytest tests/golden --update-golden"
    assert text == expected.read_text(), f"{case}: script differs from {expected}"
    assert not Path("/nonexistent").exists(), "a dry run wrote files"


def outer_commands(text: str) -> list[tuple[str, str]]:
    """(command, the comment line above it) for the lines of the list's own script, outside the nested
    plugin scripts (their own goldens check those)."""
    out: list[tuple[str, str]] = []
    depth, above = 0, ""
    for line in text.splitlines()[1:]:
        if line == "(":
            depth += 1
        elif line == ")":
            depth -= 1
        elif depth == 0 and line and not line.startswith("#") and line != "set -e":
            out.append((line, above))
        if line.startswith("#") or line in ("(", ")") or not line:
            above = line if line.startswith("# ") else above if line in ("(", ")") else ""
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_step_of_the_list_is_explained(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    verb, version, lang, cached = CASES[case]
    text = render(tmp_path, monkeypatch, verb, version, lang, cached)
    header = text.splitlines()[1]
    assert header.startswith("# cniplug net ") and (has_chinese(header) or lang == "en")
    commands = outer_commands(text)
    assert commands, "no command of the list's own"
    for command, note in commands:
        assert note, f"{case}: no explanation above {command!r}"
        if lang == "zh":
            assert has_chinese(note), f"{case}: explanation of {command!r} is not in Chinese"
    for line in text.splitlines():
        assert "tuning" not in line or line.startswith("#"), f"the foreign plugin's exec is not commented: {line}"


def test_cases_cover_every_list_verb_that_changes_state() -> None:
    assert {v[0] for v in CASES.values()} >= {"add", "del", "gc"}
