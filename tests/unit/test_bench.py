"""The bench's accounting of a plugin process (no root: the "plugin" here is a shell one-liner)."""

from __future__ import annotations

from cniplug.bench import Pending


def test_a_call_through_the_helper_counts_the_helpers_child() -> None:
    line = "cniplug-helper-stats cpu_ms=250.00 maxrss_kb=123456"
    sample = Pending(["/bin/sh", "-c", f"echo log line >&2; echo '{line}' >&2; cat"], {}, b"stdin").wait()
    assert sample.ok and sample.stdout == b"stdin"
    assert sample.cpu >= 0.25  # the child's 250 ms are added to the client's own
    assert sample.helper_rss_kb == 123456
    assert sample.stderr == b"log line\n"  # the stats line is the bench's, not the plugin's output


def test_a_standalone_call_has_no_helper_share() -> None:
    sample = Pending(["/bin/sh", "-c", "exit 3"], {}, b"").wait()
    assert sample.rc == 3 and sample.helper_rss_kb == 0 and sample.cpu < 0.25
