"""The tutorial's scripts regenerated from the plugin macros: golden files per example and language, and the
tutorial's own commands (docs/tutorial.zh.md) appear in the tutorial's order."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cniplug import facts
from cniplug.lab import tutorial
from cniplug.spec import CNIError

HERE = Path(__file__).parent
TUTORIAL = HERE.parent.parent / "docs" / "tutorial.zh.md"
SHOW = re.compile(r"^(ip netns exec \S+ )?(ip -d link show|ip addr show|ip route show|ip neigh show|brctl show|route -n"
                  r"|ethtool -S)")


def tutorial_lines(example: int) -> list[str]:
    """Every command line of the tutorial's example script, as written (the trailing `# comment` cut off):
    its clean-up lines, the commands that change something and those that show state. `echo` lines,
    the multi-line `echo "..."` of the topology and comments are narration, not commands."""
    blocks = re.findall(r"```bash\n(.*?)```", TUTORIAL.read_text(), re.S)
    out, in_echo = [], False
    for raw in blocks[example - 1].splitlines():
        line = raw.split("  #")[0].strip()
        if in_echo:
            in_echo = '"' not in line
            continue
        if line.startswith("echo"):
            in_echo = line.count('"') == 1
            continue
        if line and not line.startswith("#"):
            out.append(line)
    return out


@pytest.fixture(autouse=True)
def fixed_forwarding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(facts, "sysctl", lambda key: "0")


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("example", [1, 2, 3])
def test_the_printed_tutorial_is_the_tutorial(example: int, lang: str) -> None:
    """Every command line of the tutorial (read from the file itself) is a line of `cniplug tutorial N`,
    verbatim and in the tutorial's order: state-changing commands, clean-up lines and observation steps."""
    ours = tutorial.render_example(example, lang).text.splitlines()
    theirs = tutorial_lines(example)
    assert len(theirs) >= 15 and any(SHOW.match(line) for line in theirs)
    position = 0
    for line in theirs:
        assert line in ours[position:], f"tutorial line {line!r} missing or out of order"
        position = ours.index(line, position) + 1


@pytest.mark.parametrize("example", [1, 2, 3])
def test_observation_steps_are_marked_and_each_missing_tool_has_its_modern_equivalent(example: int) -> None:
    parsed = tutorial.render_example(example)
    observed = [" ".join(step.argv) for step in parsed.steps if step.observe]
    theirs = [line for line in tutorial_lines(example) if SHOW.match(line)]
    assert [line for line in observed if line in theirs] == theirs
    for old, new in (("brctl show", "ip link show master"), ("route -n", "ip route show"),
                     ("ethtool -S", "ip -d link show")):
        if any(old in line for line in observed):
            assert any(new in line for line in observed), f"{old} has no modern equivalent beside it"


@pytest.mark.parametrize("example", [1, 2, 3])
def test_the_lab_script_announces_its_stand_ins(example: int) -> None:
    """--run may differ from the tutorial only where a stand-in is needed, and says so."""
    lab = tutorial.render_example(example, prefix="tct-", lab=True).body
    printed = tutorial.render_example(example, prefix="tct-").body
    if example == 2:
        assert "eth0" in printed and "8.8.8.8" in printed and "iptables -t nat" in printed
        assert "eth0" not in lab.replace("plays the tutorial's eth0", "") and "iptables -w -t nat" in lab
        assert "stand-in" in lab and "-w" in lab and "xtables lock" in lab
    else:
        assert lab == printed


@pytest.mark.parametrize("example", [1, 2, 3])
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_tutorial_golden(example: int, lang: str, request: pytest.FixtureRequest) -> None:
    text = tutorial.render_example(example, lang).text
    expected = HERE / "expected" / f"tutorial-{example}-{lang}.sh"
    if request.config.getoption("--update-golden"):
        expected.write_text(text)
    assert text == expected.read_text()


def test_prefix_and_subnet_are_applied_and_validated() -> None:
    text = tutorial.render_example(3, prefix="zz-", subnet="10.77.0.0/24").text
    assert "ip netns add zz-router" in text and "10.77.1.100/24" in text and "ns1" not in text
    with pytest.raises(CNIError):
        tutorial.render_example(1, prefix="a-very-long-prefix-")
    with pytest.raises(CNIError):
        tutorial.render_example(1, subnet="not-a-subnet")
