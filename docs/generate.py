"""Regenerate the tool-produced blocks in the docs, or check that they are current.

    python docs/generate.py           rewrite every stale block in place
    python docs/generate.py --check   print a diff and exit 1 if any doc is stale

A generated block in a doc looks like this (the spec is JSON, never shell):

    <!-- cniplug-run: {"plugin": "cniplug-bridge", "command": "ADD", "dryRun": true, "config": {...}} -->
    ```bash
    ...whatever the generator puts here...
    ```
    <!-- /cniplug-run -->

Spec keys:
  plugin, config        a plugin run: the config goes to the plugin's stdin; shown as `cat <configFile>` first
  configFile            name shown for the config file (default net.json); showConfig: false hides it
  facts                 what the read-only probes see (the golden tests' "facts" object)
  steps                 a list of runs sharing one IPAM data dir; or put the step keys at the top level:
    command             CNI_COMMAND
    env                 extra CNI_* variables, or a variable set to null to leave it out
    stdin               raw stdin instead of the config
    dryRun              add --dry-run
    record              run for real, but with the kernel commands recorded instead of executed (no root)
    failAt              with record: the N-th command fails (to show rollback)
    showRecorded        with record: list the commands the runner was given, rollback included
    pretty              pipe the JSON output through `jq .`
    status              print the exit status
  tutorial, lang        `cniplug tutorial N --lang en|zh`
  file, fence           a file of this repository, verbatim (fence: the code block's language)
  shell                 a list of bash commands run for real, as root, from the repository root (`cniplug`
                        is this interpreter's, e.g. .venv/bin/cniplug), one bash
                        process for all of them: each is shown as `$ COMMAND` followed by its output
                        (stdout and stderr). Root only: elsewhere these blocks are left as they are and
                        not checked (tests/unit/test_docs.py checks them in a root test, which CI runs).
    setup               commands run, silently, before the first one (e.g. to redo what an earlier block
                        showed); a failing one fails the block
    cleanup             commands run, silently, before the first command and after the last (also on
                        failure): they remove whatever the commands create. Name all of it with the prefix
                        `tdoc` and use 10.245.x.0/24, so a run can touch nothing else on the machine.

Runs happen in-process with the golden tests' fakes (tests/golden/test_golden.py: FakeFacts), so the
output does not depend on the machine: fixed host veth name and MACs, no host state probed. The IPAM
dataDir "/tmp/cni-ipam" in a config is an empty temporary directory while the plugin runs.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import fcntl
import functools
import hashlib
import importlib.util
import io
import itertools
import json
import logging
import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cniplug import cli, facts, runner, skel  # noqa: E402
from cniplug.plugins import common  # noqa: E402

DOCS = [ROOT / "docs" / name for name in ("why-cni.md", "why-cni.zh.md", "writing-a-plugin.md",
                                          "writing-a-plugin.zh.md")]
DATA_DIR = "/tmp/cni-ipam"
DEFAULT_ENV = {"CNI_CONTAINERID": "ctr1", "CNI_NETNS": "/run/netns/ctr1", "CNI_IFNAME": "eth0",
               "CNI_PATH": "/opt/cni/bin"}
# What a runtime sets for each verb (ADD, CHECK and DEL get all of DEFAULT_ENV).
VERB_ENV = {"GC": ("CNI_PATH",), "STATUS": ("CNI_PATH",), "VERSION": ()}
BLOCK = re.compile(r"(?P<open><!-- cniplug-run: (?P<spec>.*?) -->\n)(?P<body>.*?)(?P<close><!-- /cniplug-run -->)",
                   re.DOTALL)


@functools.cache
def _load_fake_facts() -> Any:
    path = ROOT / "tests" / "golden" / "test_golden.py"
    spec = importlib.util.spec_from_file_location("cniplug_docs_golden", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FakeFacts


def _mac(n: int) -> str:
    return f"02:00:00:00:00:{n:02x}"


@contextlib.contextmanager
def fakes(data: dict[str, Any], record: bool = False,
          fail_at: int | None = None) -> Iterator[list[runner.RecordingRunner]]:
    """The golden tests' fakes, plus distinct fixed MACs; with `record`, a runner that runs nothing."""
    with pytest.MonkeyPatch.context() as mp:
        _load_fake_facts()(data).install(mp)
        counter = itertools.count(1)
        mp.setattr(common, "random_mac", lambda: _mac(next(counter)))
        recorders: list[runner.RecordingRunner] = []
        if record:

            def factory() -> runner.RecordingRunner:
                recorders.append(runner.RecordingRunner(fail_at=fail_at))
                return recorders[-1]

            def mac_of(name: str) -> str:
                # The MAC the script gave the device (`ip link add NAME ... address MAC`), else a fixed one.
                for rec in recorders:
                    for argv in rec.calls:
                        if argv[:4] == ["ip", "link", "add", name]:
                            words = argv[: argv.index("peer")] if "peer" in argv else argv
                            if "address" in words:
                                return words[words.index("address") + 1]
                return "02:00:00:" + ":".join(re.findall("..", hashlib.sha256(name.encode()).hexdigest()[:6]))

            mp.setattr(common, "RUNNER_FACTORY", factory)
            mp.setattr(common, "maybe_lock", lambda req, lock, name: contextlib.nullcontext())
            mp.setattr(facts, "check_netns", lambda path: None)
            mp.setattr(facts, "mac_of", mac_of)
        yield recorders


def recorded_commands(recorders: list[runner.RecordingRunner]) -> str:
    lines = ["# The commands the runner was given (recorded, not executed):"]
    for rec in recorders:
        for n, (argv, done) in enumerate(zip(rec.calls, rec.records, strict=True), 1):
            status = f"  -> exit {done.rc}: {done.stderr}" if done.rc else ""
            lines.append(f"#  {n:2} {shlex.join(argv)}{status}")
    return "\n".join(lines)


@contextlib.contextmanager
def plugin_logs(stderr: io.StringIO) -> Iterator[None]:
    """The plugin's log (stderr in a real run) goes to `stderr`, not into the generator's output."""
    logger = logging.getLogger("cniplug")
    saved = logger.handlers[:], logger.level
    logger.handlers.clear()
    try:
        with contextlib.redirect_stderr(stderr):
            yield
    finally:
        logger.handlers[:], logger.level = saved[0], saved[1]


def handlers_of(plugin: str) -> tuple[dict[str, skel.Handler], str]:
    return cli.plugin_handlers(plugin)


def command_line(plugin: str, env: dict[str, str], step: dict[str, Any], config_file: str) -> str:
    words = [f"{k}={shlex.quote(v)}" for k, v in env.items()]
    tail = plugin + (" --dry-run" if step.get("dryRun") else "")
    tail += f" <<< {shlex.quote(step['stdin'])}" if "stdin" in step else f" < {config_file}"
    if step.get("pretty"):
        tail += " | jq ."
    if step.get("status"):
        tail += '; echo "exit status $?"'
    return f"$ {' '.join(words)} \\\n    {tail}"


def run_plugin_block(spec: dict[str, Any]) -> str:
    plugin = spec["plugin"]
    config_file = spec.get("configFile", "net.json")
    steps = spec.get("steps") or [spec]
    handlers, about = handlers_of(plugin)
    out: list[str] = []
    if spec.get("showConfig", True) and "config" in spec:
        out += [f"$ cat {config_file}", json.dumps(spec["config"], indent=2, ensure_ascii=False)]
    with tempfile.TemporaryDirectory(prefix="cniplug-docs-") as tmp:
        raw = json.dumps(spec.get("config", {})).replace(DATA_DIR, tmp).encode()
        for step in steps:
            defaults = {k: v for k, v in DEFAULT_ENV.items() if k in VERB_ENV.get(step["command"], DEFAULT_ENV)}
            env = {"CNI_COMMAND": step["command"], **defaults, **step.get("env", {})}
            env = {k: v for k, v in env.items() if v is not None}
            stdin = step["stdin"].encode() if "stdin" in step else raw
            stdout = io.StringIO()
            stderr = io.StringIO()
            with fakes(spec.get("facts", {}), bool(step.get("record")), step.get("failAt")) as recorders, \
                    plugin_logs(stderr):
                rc = skel.run(handlers, about, argv=["--dry-run"] if step.get("dryRun") else [],
                              environ=env, stdin=io.BytesIO(stdin), stdout=stdout)
            text = stdout.getvalue().replace(tmp, DATA_DIR)
            if step.get("pretty") and text.strip():
                text = json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n"
            out.append(command_line(plugin, env, step, config_file))
            if step.get("showRecorded"):
                out.append(recorded_commands(recorders))
            if text:
                out.append(text.rstrip("\n"))
            if step.get("status"):
                out.append(f"exit status {rc}")
            elif rc != 0:
                raise RuntimeError(f"{plugin} {step['command']} exited {rc} (add \"status\": true if expected):\n"
                                   + text)
    return "\n".join(out) + "\n"


def run_tutorial_block(spec: dict[str, Any]) -> str:
    example, lang = int(spec["tutorial"]), spec.get("lang", "en")
    stdout = io.StringIO()
    with fakes(spec.get("facts", {})), contextlib.redirect_stdout(stdout):
        try:
            cli.main(["tutorial", str(example), "--lang", lang])
        except SystemExit as exit_:
            if exit_.code not in (0, None):
                raise RuntimeError(f"cniplug tutorial {example} exited {exit_.code}") from None
    return f"$ cniplug tutorial {example} --lang {lang}\n{stdout.getvalue()}"


MARK = "@@cniplug-docs-command@@"


def is_root() -> bool:
    return os.geteuid() == 0


def run_shell_block(spec: dict[str, Any]) -> str:
    """Run the commands for real (root) in one bash; return `$ COMMAND` and its output for each."""
    commands: list[str] = spec["shell"]
    path = os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")  # behind the venv's bin: `cniplug` is ours
    cleanup = "\n".join(spec.get("cleanup", [])) or ":"
    lines = [f"cleanup() {{\n{cleanup}\n}} >/dev/null 2>&1", "trap cleanup EXIT", "cleanup"]
    for command in spec.get("setup", []):
        failed = shlex.quote(f"setup failed: {command}")
        lines += ["{", command, f"}} >/dev/null 2>&1 || {{ echo {failed} >&2; exit 1; }}"]
    for n, command in enumerate(commands):
        lines += [f"printf '\\n{MARK}{n}\\n'", "{", command, "} 2>&1"]
    # The docs show fixed names (tdoc1, tdoc0): two runs at once on one machine would share them.
    with open("/run/lock/cniplug-docs-shell.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        env = {"PATH": os.pathsep.join([str(Path(sys.executable).parent), path]), "LC_ALL": "C.UTF-8"}
        proc = subprocess.run(["bash", "-c", "\n".join(lines)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                              env=env)
    parts = re.split(rf"\n{MARK}(\d+)\n", proc.stdout)
    if proc.stderr or len(parts) != 2 * len(commands) + 1:
        raise RuntimeError(f"shell block failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    out = []
    for command, output in zip(commands, parts[2::2], strict=True):
        out.append("$ " + command)
        if output.strip("\n"):
            out.append(output.strip("\n"))
    return "\n".join(out) + "\n"


def render_block(spec: dict[str, Any]) -> str:
    """The markdown between the markers: one fenced code block."""
    if "shell" in spec:
        text, fence = run_shell_block(spec), "console"
    elif "file" in spec:
        text = (ROOT / spec["file"]).read_text()
        fence = spec.get("fence", "")
    elif "tutorial" in spec:
        text, fence = run_tutorial_block(spec), "bash"
    else:
        text, fence = run_plugin_block(spec), "bash"
    return f"```{fence}\n{text.rstrip(chr(10))}\n```\n"


def regenerate(text: str, render: Callable[[dict[str, Any]], str] = render_block, root: bool | None = None) -> str:
    """Every block rendered afresh; `shell` blocks only when `root` (default: running as root), else kept."""
    root = is_root() if root is None else root

    def replace(m: re.Match[str]) -> str:
        spec = json.loads(m["spec"])
        if "shell" in spec and not root:
            return m[0]
        return m["open"] + render(spec) + m["close"]

    return BLOCK.sub(replace, text)


def count_blocks(text: str) -> int:
    return len(BLOCK.findall(text))


def count_shell_blocks(text: str) -> int:
    return sum("shell" in json.loads(m["spec"]) for m in BLOCK.finditer(text))


def stale(docs: list[Path] = DOCS, root: bool | None = None) -> dict[Path, str]:
    """Doc -> unified diff (current -> regenerated), for every doc whose blocks are out of date.
    `shell` blocks are checked only when `root` (default: running as root)."""
    diffs = {}
    for path in docs:
        old = path.read_text()
        new = regenerate(old, root=root)
        if new != old:
            rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
            diffs[path] = "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True),
                                                       f"a/{rel}", f"b/{rel}"))
    return diffs


def check() -> int:
    diffs = stale()
    for diff in diffs.values():
        sys.stdout.write(diff)
    if diffs:
        print(f"\n{len(diffs)} doc(s) stale: run python docs/generate.py", file=sys.stderr)
    unchecked = 0 if is_root() else sum(count_shell_blocks(path.read_text()) for path in DOCS)
    if unchecked:
        print(f"{unchecked} shell block(s) not checked: they run commands as root", file=sys.stderr)
    return 1 if diffs else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="print a diff and exit 1 if a doc is stale")
    args = parser.parse_args(argv)
    if args.check:
        return check()
    for path in DOCS:
        old = path.read_text()
        new = regenerate(old)
        if new != old:
            path.write_text(new)
            print(f"updated {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
