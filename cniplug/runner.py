"""Execute scripts step by step through `sh`, rolling back completed steps on failure.

`execute` is the one seam every external command goes through (probes included); tests patch it or
use RecordingRunner.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field

from cniplug.script import Script, Step
from cniplug.spec import ERR_INTERNAL, CNIError

log = logging.getLogger("cniplug")

# A runtime may exec us with only CNI_* in the environment: no PATH at all.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class Completed:
    argv: list[str]
    rc: int
    stdout: str = ""
    stderr: str = ""


def which(program: str) -> str:
    path = os.environ.get("PATH", "") + ":" + SYSTEM_PATH
    found = shutil.which(program, path=path)
    if not found:
        raise CNIError(ERR_INTERNAL, f"command not found: {program}", f"searched {path}")
    return found


def execute(argv: list[str], stdin: str | None = None) -> Completed:
    """Run one command (never through a shell) and capture its exit status and output."""
    import sh  # imported here: it costs ~66 ms and dry-run/VERSION never need it

    cmd = sh.Command(which(argv[0]))
    proc = cmd(*argv[1:], _ok_code=list(range(256)), _return_cmd=True, _env=command_env(), _in=stdin)
    out = proc.stdout.decode(errors="replace") if isinstance(proc.stdout, bytes) else str(proc.stdout)
    err = proc.stderr.decode(errors="replace") if isinstance(proc.stderr, bytes) else str(proc.stderr)
    return Completed(argv=argv, rc=int(proc.exit_code), stdout=out, stderr=err)


def command_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = env.get("PATH", "") + ":" + SYSTEM_PATH if env.get("PATH") else SYSTEM_PATH
    env["LC_ALL"] = "C"  # stable error texts to match "not found" on
    return env


@dataclass
class Record:
    step: Step
    result: Completed


@dataclass
class Runner:
    """Runs a Script. `records` keeps argv, exit status and stderr of every command run."""

    records: list[Completed] = field(default_factory=list)

    def call(self, argv: list[str]) -> Completed:
        result = execute(argv)
        self.records.append(result)
        log.debug("ran %s -> %d %s", argv, result.rc, result.stderr.strip())
        return result

    def run(self, script: Script, best_effort: bool = False) -> None:
        """Run every step; on a failure undo the completed steps in reverse and raise a CNIError.

        best_effort (DEL): every failure is logged and skipped, nothing is rolled back.
        """
        done: list[Step] = []
        for index, step in enumerate(script.steps):
            result = self.call(step.argv)
            if result.rc == 0:
                done.append(step)
                continue
            if step.tolerant or best_effort:
                log.info("ignored failure of %s: %s", step.line, result.stderr.strip())
                continue
            self.rollback(done)
            raise CNIError(
                ERR_INTERNAL,
                f"step {index + 1} failed: {' '.join(step.argv)}",
                f"exit {result.rc}: {result.stderr.strip()}",
            )

    def rollback(self, done: list[Step]) -> None:
        for step in reversed(done):
            for undo in step.undo:
                result = self.call(undo)
                if result.rc != 0:
                    log.warning("rollback step %s failed: %s", undo, result.stderr.strip())


@dataclass
class RecordingRunner(Runner):
    """For tests: runs nothing, records argv; `fail_at` makes the N-th command (1-based) fail."""

    fail_at: int | None = None
    calls: list[list[str]] = field(default_factory=list)

    def call(self, argv: list[str]) -> Completed:
        self.calls.append(argv)
        rc = 1 if self.fail_at is not None and len(self.calls) == self.fail_at else 0
        result = Completed(argv=argv, rc=rc, stderr="injected failure" if rc else "")
        self.records.append(result)
        return result
