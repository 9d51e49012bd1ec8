"""Execute scripts step by step, rolling back completed steps on failure.

`execute` is the one seam every external command goes through (probes included); tests patch it or
use RecordingRunner. It spawns with `subprocess` (vfork + exec), not the `sh` library the design
first named: a command through `sh` costs ~7 ms (a Python-level fork of the whole interpreter plus
four I/O threads) against ~1.7 ms, and `import sh` another 66-106 ms; a bridge ADD runs 5-7
commands. Measured and decided in issue #7; README "Design decisions" has the numbers.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field

from cniplug import procsys
from cniplug.script import HANDLE, Script, Step
from cniplug.spec import ERR_INTERNAL, ERR_TRY_AGAIN_LATER, CNIError

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
    """Run one command (never through a shell) and capture its exit status and output.

    A `sysctl -w` (also through `nsenter --net=PATH`) is carried out in this process, with the same
    effect, output and exit status (procsys.py); the command must still be installed, as the script
    printed by --dry-run needs it."""
    path = which(argv[0])
    if stdin is None and argv[0] in ("sysctl", "nsenter") and procsys.parse(argv) is not None:
        which("sysctl")  # as `nsenter ... sysctl` would need it (an `nsenter ... ip` does not)
        done = procsys.carry_out(argv)
        if done is not None:
            return Completed(argv=argv, rc=done[0], stdout=done[1], stderr=done[2])
    try:
        proc = subprocess.run([path, *argv[1:]], input=None if stdin is None else stdin.encode(),
                              stdin=subprocess.DEVNULL if stdin is None else None, capture_output=True,
                              env=command_env(), check=False)
    except OSError as exc:  # found but not executable, or no memory to spawn
        return Completed(argv=argv, rc=126, stderr=f"{path}: {exc.strerror}")
    return Completed(argv=argv, rc=proc.returncode, stdout=proc.stdout.decode(errors="replace"),
                     stderr=proc.stderr.decode(errors="replace"))


def command_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = env.get("PATH", "") + ":" + SYSTEM_PATH if env.get("PATH") else SYSTEM_PATH
    env["LC_ALL"] = "C"  # stable error texts to match "not found" on
    return env


@dataclass
class Runner:
    """Runs a Script. `records` keeps argv, exit status and stderr of every command run.

    Batching is invisible to templates: consecutive `ip` steps for one namespace go to one
    `ip -batch -` (it stops at the first failing line and names it, so rollback stays exact), and
    consecutive iptables steps for one table to one `iptables-restore --noflush` (atomic: all or none).
    """

    records: list[Completed] = field(default_factory=list)
    batch: bool = True

    def call(self, argv: list[str], stdin: str | None = None) -> Completed:
        started = time.perf_counter()
        result = execute(argv, stdin)
        self.records.append(result)
        log.debug("ran %s -> %d in %.1f ms %s", argv, result.rc, (time.perf_counter() - started) * 1000,
                  result.stderr.strip())
        return result

    def run(self, script: Script, best_effort: bool = False) -> None:
        """Run every step; on a failure undo the completed steps in reverse and raise a CNIError.

        best_effort (DEL): every failure is logged and skipped, nothing is rolled back.
        """
        done: list[Step] = []
        steps = script.steps
        index = 0
        while index < len(steps):
            start = index
            group = self.group(steps, index, best_effort) if self.batch else [steps[index]]
            ok, failed = self.run_group(group)
            done.extend(group[:ok])
            index += len(group)
            if failed is None:
                continue
            step, result = failed
            if best_effort or step.tolerant:
                log.info("ignored failure of %s: %s", step.line, result.stderr.strip())
                # The rest of a failed batch still runs, one step at a time: after the failed line of an ip
                # batch; all of it after a restore (it applied none) or an ip batch that named no line.
                restored = group[0].argv[0] in ("iptables", "ip6tables")
                rest = group if restored or ok == len(group) else group[ok + 1:]
                for other in rest if len(group) > 1 else []:
                    if self.call(other.argv).rc != 0:
                        log.info("ignored failure of %s", other.line)
                continue
            self.rollback(done)
            # Another program holding the xtables lock for longer than -w waits is transient.
            busy = "xtables lock" in result.stderr
            where = f"step {steps.index(step) + 1}" if step in group else f"one of steps {start + 1}-{index}"
            raise CNIError(
                ERR_TRY_AGAIN_LATER if busy else ERR_INTERNAL,
                f"{where} failed: {' '.join(step.argv)}",
                f"exit {result.rc}: {result.stderr.strip()}",
            )

    def group(self, steps: list[Step], start: int, best_effort: bool = False) -> list[Step]:
        """The longest run of steps from `start` that can go to the kernel as one batch.

        Tolerant steps are batched only in best-effort runs (DEL), where a failed batch is redone
        step by step; elsewhere their failure must not stop the steps batched with them.
        """
        key = batch_key(steps[start], best_effort)
        if key is None:
            return [steps[start]]
        end = start + 1
        while end < len(steps) and batch_key(steps[end], best_effort) == key:
            end += 1
        return steps[start:end]

    def run_group(self, group: list[Step]) -> tuple[int, tuple[Step, Completed] | None]:
        """Run a group; returns (how many steps may have completed, the failed step and its result).

        `ip -batch` stops at the first failing line and names it (`Command failed -:N`): the lines before
        it are done. On an argument error it exits without naming one (e.g. an unknown route table); then
        every line may have run, so all count as done (undoing one that was not done fails, and rollback
        logs that and goes on), and the failed step is the batch command itself. iptables-restore applies
        all or nothing: 0 done, and the failed step is the rule it names, else the batch command.
        """
        if len(group) == 1:
            result = self.call(group[0].argv)
            group[0].output = result.stdout
            return (1, None) if result.rc == 0 else (0, (group[0], result))
        argv, stdin = batch_command(group)
        result = self.call(argv, stdin)
        if result.rc == 0:
            return len(group), None
        batch = Step(argv=argv, line=" ".join(argv))  # the failed step when the tool names no line
        if argv[0] in ("iptables-restore", "ip6tables-restore"):
            return 0, (_restore_failed_step(group, result) or batch, result)
        m = re.search(r"Command failed -:(\d+)", result.stderr)
        if m is None or not 1 <= int(m.group(1)) <= len(group):
            return len(group), (batch, result)
        line = int(m.group(1))
        return line - 1, (group[line - 1], result)

    def rollback(self, done: list[Step]) -> None:
        for step in reversed(done):
            for undo in step.undo:
                if HANDLE in undo:
                    undo = with_handle(undo, step.output)
                    if not undo:
                        log.warning("rollback of %s: it printed no handle: %r", step.line, step.output)
                        continue
                result = self.call(undo)
                if result.rc != 0:
                    log.warning("rollback step %s failed: %s", undo, result.stderr.strip())


def with_handle(undo: list[str], output: str) -> list[str]:
    """An undo argv with the word @handle replaced by the last `# handle N` in `output` (what
    `nft --echo --handle` printed); [] when there is none (script.py: #undo)."""
    found = re.findall(r"# handle (\d+)", output)
    return [found[-1] if word == HANDLE else word for word in undo] if found else []


_IP_BATCHABLE = re.compile(r"^[A-Za-z0-9_.:/=@+,-]+$")  # words ip's batch parser reads as we mean them


def _ip_prefix(argv: list[str]) -> int:
    """Length of the `ip` command prefix (`ip`, `ip -n NS`, `nsenter --net=P ip`), 0 if not batchable."""
    if argv[0] == "ip":
        n = 3 if argv[1:2] == ["-n"] else 1
    elif argv[0] == "nsenter" and len(argv) > 3 and argv[1].startswith("--net=") and argv[2] == "ip":
        n = 3
    else:
        return 0
    rest = argv[n:]
    if not rest or rest[0].startswith("-") or rest[0] == "netns" or not all(_IP_BATCHABLE.match(w) for w in rest):
        return 0
    return n


def batch_key(step: Step, best_effort: bool = False) -> tuple[str, ...] | None:
    if step.tolerant and not best_effort:
        return None
    argv = step.argv
    n = _ip_prefix(argv)
    if n:
        return ("ip", *argv[:n])
    if (argv[0] in ("iptables", "ip6tables") and argv[1:3] == ["-w", "-t"] and len(argv) > 5
            and argv[4] in ("-N", "-A", "-I", "-D", "-F", "-X")):
        return (argv[0], argv[3])
    return None


def _restore_word(word: str) -> str:
    if _IP_BATCHABLE.match(word) or word == "!":
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def batch_command(group: list[Step]) -> tuple[list[str], str]:
    first = group[0].argv
    if first[0] in ("iptables", "ip6tables"):
        lines = [" ".join(_restore_word(w) for w in step.argv[4:]) for step in group]
        return [f"{first[0]}-restore", "-w", "--noflush"], f"*{first[3]}\n" + "\n".join(lines) + "\nCOMMIT\n"
    n = _ip_prefix(first)
    return [*first[:n], "-batch", "-"], "".join(" ".join(step.argv[n:]) + "\n" for step in group)


def _restore_failed_step(group: list[Step], result: Completed) -> Step | None:
    """The step of the rule iptables-restore names: "line N failed" (a rule the kernel refused) or "Error
    occurred at line: N" (a rule it could not parse). None when it names no rule: iptables-nft names the
    COMMIT line for a rule whose target chain does not exist (measured, 1.8.9)."""
    m = re.search(r"line (\d+) failed|Error occurred at line: (\d+)", result.stderr)
    line = int(m.group(1) or m.group(2)) - 1 if m else 0  # line 1 is the *table header
    return group[line - 1] if 1 <= line <= len(group) else None


@dataclass
class RecordingRunner(Runner):
    """For tests: runs nothing, records argv; `fail_at` makes the N-th command (1-based) fail."""

    fail_at: int | None = None
    calls: list[list[str]] = field(default_factory=list)
    batch: bool = False

    def call(self, argv: list[str], stdin: str | None = None) -> Completed:
        self.calls.append(argv)
        rc = 1 if self.fail_at is not None and len(self.calls) == self.fail_at else 0
        result = Completed(argv=argv, rc=rc, stderr="injected failure" if rc else "")
        self.records.append(result)
        return result
