"""facts.iptables_words: iptables' rule lines read back as the argv iptables would take."""

from __future__ import annotations

import shlex

import pytest

from cniplug import facts


@pytest.mark.parametrize("line", [
    '-A POSTROUTING -s 10.22.0.2/32 -m comment --comment "name: \\"net\\" id: \\"c1\\"" -j CNI-abc',
    "-A CNI-DN-x -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.22.0.2:80",
    "-N CNI-HOSTPORT-DNAT",
])
def test_reads_plain_and_double_quoted_words_as_shlex_does(line: str) -> None:
    assert facts.iptables_words(line) == shlex.split(line)


def test_a_quote_iptables_escaped_comes_back_without_the_backslash() -> None:
    line = '-A CNI-DN-x -m comment --comment "don\\\'t \\\\ \\"x\\"" -j DNAT'
    assert facts.iptables_words(line) == ["-A", "CNI-DN-x", "-m", "comment", "--comment", 'don\'t \\ "x"', "-j", "DNAT"]


def test_a_line_cut_short_is_no_words() -> None:
    assert facts.iptables_words('-A X --comment "open') == []
