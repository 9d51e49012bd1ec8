"""Golden transcripts of the node agent: (me, nodes, facts, settings) -> the exact reconcile / uninstall
script, compared with tests/golden/expected/node-*.sh. Regenerate with `pytest tests/golden --update-golden`
and review the diff like code. Every step carries an explanation, in Chinese in the -zh cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from cniplug.node import reconcile
from cniplug.node.model import NodeInfo
from cniplug.node.reconcile import Facts, Route, Settings

EXPECTED = Path(__file__).parent / "expected"
ME = NodeInfo("n1", ("10.244.1.0/24",), "192.168.50.11")
N2 = NodeInfo("n2", ("10.244.2.0/24",), "192.168.50.12")
N3 = NodeInfo("n3", ("10.244.3.0/24",), "")
LINK = Route("192.168.50.0/24", "", "kernel", "link")
OLD = Route("10.244.9.0/24", "192.168.50.19", "222")
NAT = ("-P POSTROUTING ACCEPT", "-N CNIPLUG-POSTRTG",
       '-A POSTROUTING -s 10.244.1.5/32 -m comment --comment "name: x" -j CNI-0123456789abcdef01234567',
       '-A POSTROUTING -m comment --comment "cniplug node: cluster traffic before the CNI masquerade chains" '
       '-j CNIPLUG-POSTRTG',
       '-A CNIPLUG-POSTRTG -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment '
       '"cniplug node: pod to pod in the cluster keeps its source" -j ACCEPT')


def cases() -> dict[str, str]:
    out = {}
    for lang in ("en", "zh"):
        s = Settings(cluster_cidr="10.244.0.0/16", lang=lang)
        tag = "" if lang == "en" else "-zh"
        out[f"node-fresh{tag}"] = reconcile.plan(ME, [ME, N2, N3], Facts((LINK,), (), None, "0"), s)
        out[f"node-left-and-moved{tag}"] = reconcile.plan(
            ME, [ME, N2], Facts((LINK, OLD), NAT, reconcile.conflist_text(ME, s), "1"), s)
        out[f"node-no-cidr-yet{tag}"] = reconcile.plan(NodeInfo("n1", (), ME.address), [N2],
                                                       Facts((LINK,), (), None, "1"), s)
        out[f"node-uninstall{tag}"] = reconcile.uninstall_plan(
            Facts((LINK, OLD), NAT, reconcile.conflist_text(ME, s), "1"), s)
    return out


@pytest.mark.parametrize("name", sorted(cases()))
def test_node_script(name: str, request: pytest.FixtureRequest) -> None:
    text = cases()[name]
    expected = EXPECTED / f"{name}.sh"
    if request.config.getoption("--update-golden"):
        expected.write_text(text)
    assert expected.exists(), f"no golden file {expected}: run pytest tests/golden --update-golden"
    assert text == expected.read_text()
    for step in reconcile.steps_of(text):
        assert step.note, f"{name}: no explanation above {step.line!r}"
        if name.endswith("-zh"):
            assert any("\u4e00" <= c <= "\u9fff" for c in step.note), f"{name}: {step.note!r} is not Chinese"
