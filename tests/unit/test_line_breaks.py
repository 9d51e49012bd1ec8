"""Issue #16 item 3: the runner splits a script into lines exactly where bash does, and no value can carry
a line break that one of them would see and the other not (str.splitlines() also breaks on \\r, \\x0b,
\\x0c, \\x1c-\\x1e, U+0085, U+2028, U+2029; bash only on \\n)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from cniplug import i18n, ipam, render, script
from cniplug.skel import parse_request
from cniplug.spec import CNIError


def ascii_id(value: str) -> str:
    """A test id of plain characters (mutmut passes ids on to pytest, which cannot find escaped ones)."""
    return "".join(c if c.isalnum() or c in "-_." else f"U+{ord(c):04X}" for c in value)


BREAKS = list("\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
IDS = [f"U+{ord(c):04X}" for c in BREAKS]


def test_line_breaks_are_every_splitlines_break_but_newline() -> None:
    every = [chr(c) for c in range(0x110000) if len(f"a{chr(c)}b".splitlines()) == 2]
    assert sorted(every) == sorted(BREAKS + ["\n"])
    assert sorted(script.LINE_BREAKS) == sorted(BREAKS)


@pytest.mark.parametrize("c", BREAKS, ids=IDS)
def test_parser_never_sees_a_step_bash_does_not(c: str, tmp_path: Path) -> None:
    body = f"# a comment{c}touch {tmp_path}/ran\nip link show lo\n"
    subprocess.run(["bash", "-c", body.replace("ip link show lo", "true")], check=True)
    assert not (tmp_path / "ran").exists()  # bash: the whole first line is a comment
    with pytest.raises(CNIError) as e:
        script.parse(body)
    assert e.value.code == 999


def test_lines_are_trimmed_of_bash_blanks_only() -> None:
    # U+00A0 is whitespace to str.strip() but part of the word to bash
    assert script.parse("\xa0ip link\n").steps[0].argv[0] == "\xa0ip"
    assert script.parse(" \tip link\n").steps[0].argv == ["ip", "link"]


@pytest.mark.parametrize("c", BREAKS + ["\n", "\0"], ids=IDS + ["LF", "NUL"])
def test_render_refuses_line_breaks_in_values(c: str) -> None:
    with pytest.raises(CNIError) as e:
        render.environment().from_string("# {{ v }}\nip link\n").render(v=f"x{c}reboot")
    assert e.value.code == 7 and "reboot" in e.value.msg


@pytest.mark.parametrize("c", sorted(set(BREAKS) | {chr(n) for n in range(0x20)} | {"\x7f"}), ids=ascii_id)
def test_say_refuses_control_characters_and_line_breaks(c: str) -> None:
    with pytest.raises(CNIError) as e:
        i18n.say("bridge_add", name=f"x{c}reboot")
    assert e.value.code == 7 and "'name'" in e.value.msg


def test_say_fills_plain_values() -> None:
    assert i18n.say("bridge_add", name="cni0") == "# Create the bridge cni0 (tutorial example 2, step 2)"


def request(kind: str) -> object:
    raw = json.dumps({"cniVersion": "1.0.0", "name": "n", "type": "cniplug-bridge", "ipam": {"type": kind}})
    return parse_request({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_NETNS": "/run/netns/x",
                          "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin"}, raw.encode())


@pytest.mark.parametrize("kind", ["host-local\u2028ip link delete eth0", "a b", "a\tb", "x\x85y", "a/b", "..",
                                  "nul\0", "del\x7f", "\u200bzero-width"], ids=ascii_id)
def test_ipam_type_must_be_a_plugin_name(kind: str) -> None:
    with pytest.raises(CNIError) as e:
        ipam.ipam_type(request(kind))  # type: ignore[arg-type]
    assert e.value.code == 7 and "ipam.type" in e.value.msg


@pytest.mark.parametrize("kind", ["host-local", "cniplug-host-local", "dhcp", "whereabouts", "my_ipam.v2"])
def test_ipam_type_plugin_names_pass(kind: str) -> None:
    assert ipam.ipam_type(request(kind)) == kind  # type: ignore[arg-type]
