"""The tutorial's scripts regenerated from the plugin macros: golden files per example and language, and the
tutorial's own commands (docs/tutorial.zh.md) appear in the tutorial's order."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from cniplug import facts, tutorial
from cniplug.spec import CNIError

HERE = Path(__file__).parent
TUTORIAL = HERE.parent.parent / "docs" / "tutorial.zh.md"
# Lines of the tutorial that only show or clean up, and have no counterpart in a step.
SHOW_ONLY = re.compile(r"^(echo|brctl|route|ip -d|ip addr show|ip route show|ip neigh"
                       r"|ip netns exec \S+ (ip -d|ip addr show|ip route show|ip neigh|route|ethtool)|.*2>/dev/null)")


def tutorial_commands(example: int) -> list[list[str]]:
    blocks = re.findall(r"```bash\n(.*?)```", TUTORIAL.read_text(), re.S)
    out = []
    for line in blocks[example - 1].splitlines():
        line = line.split("  #")[0].strip()
        if not line.startswith(("ip ", "iptables ", "sysctl ")) or SHOW_ONLY.match(line):
            continue  # comments, echo (some span lines), and show-only commands
        out.append(shlex.split(line))
    return out


def normalise(argv: list[str], example: int) -> list[str]:
    words = [w for w in argv if w != "-w"]  # we always wait for the xtables lock
    if example == 2:  # the outside world is a namespace of ours, not eth0 / 8.8.8.8
        words = ["veth-out" if w == "eth0" else "203.0.113.1" if w == "8.8.8.8" else w for w in words]
    return words


@pytest.fixture(autouse=True)
def fixed_forwarding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(facts, "sysctl", lambda key: "0")


@pytest.mark.parametrize("example", [1, 2, 3])
def test_tutorial_commands_in_tutorial_order(example: int) -> None:
    ours = [normalise(step.argv, example) for step in tutorial.render_example(example).steps]
    theirs = [normalise(argv, example) for argv in tutorial_commands(example)]
    assert len(theirs) >= 10
    position = 0
    for argv in theirs:
        assert argv in ours[position:], f"tutorial command {' '.join(argv)!r} missing or out of order"
        position = ours.index(argv, position) + 1


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
