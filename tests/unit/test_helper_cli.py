"""`cniplug helper` refuses a bad option with one line naming it (exit 2) before it listens on anything."""

from __future__ import annotations

import pytest

from cniplug import cli, helper


@pytest.mark.parametrize("value", ["8.8.8.8:9217", "127.0.0.1:99999", "localhost"])
def test_bad_metrics_address_is_refused_before_serving(value: str, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    served: list[str] = []
    monkeypatch.setattr(helper, "main", lambda *args: served.append("served") or 0)
    with pytest.raises(SystemExit) as exit:
        cli.main(["helper", "--socket", "/run/cniplug/qa2-never.sock", "--metrics", value])
    assert exit.value.code == 2 and not served
    err = capsys.readouterr().err
    assert f"--metrics {value!r}" in err and len(err.strip().splitlines()) == 1
