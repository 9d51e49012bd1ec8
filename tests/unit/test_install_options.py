"""`cniplug install` run from a checkout: the self-contained install's options without --self-contained are
refused (exit 2, nothing installed), not ignored for an install of wrappers into the venv."""

from __future__ import annotations

from pathlib import Path

import pytest

from cniplug import cli


@pytest.mark.parametrize("extra", [["--runtime-dir", "RT"], ["--bundle", "RT"]])
def test_self_contained_options_without_self_contained_are_refused(tmp_path: Path, extra: list[str],
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    bin_dir = tmp_path / "bin"
    argv = ["install", "--bin-dir", str(bin_dir), "--no-auto-helper",
            *[str(tmp_path / "rt") if a == "RT" else a for a in extra]]
    with pytest.raises(SystemExit) as exit:
        cli.main(argv)
    assert exit.value.code == 2 and not bin_dir.exists()
    err = capsys.readouterr().err
    assert extra[0] in err and "--self-contained" in err and len(err.strip().splitlines()) == 1
