"""The CNI entry point: read env + stdin, validate them per verb, dispatch, print result or error.

Every plugin's main() is `skel.run(handlers)`. Nothing here touches the host.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cniplug.fastpath import USAGE, parse_options
from cniplug.spec import (
    CURRENT_VERSION,
    ERR_DECODE,
    ERR_INCOMPATIBLE_VERSION,
    ERR_INTERNAL,
    ERR_INVALID_CONFIG,
    ERR_INVALID_ENV,
    ERR_IO,
    ERR_UNKNOWN_CONTAINER,
    ERR_UNSUPPORTED_FIELD,
    SUPPORTED_VERSIONS,
    CNIError,
    check_version,
    from_current,
    to_current,
    version_tuple,
)

log = logging.getLogger("cniplug")

VERBS = ("ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION")
# Which environment variables each verb needs (as the Go skel does; CNI_NETNS is optional on DEL).
REQUIRED_ENV = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "GC": ("CNI_PATH",),
    "STATUS": (),
    "VERSION": (),
}
NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
MAX_STDIN = 1 << 20


def check_ifname(name: str, what: str = "CNI_IFNAME") -> str:
    """Linux interface name rules: 1-15 bytes, not . or .., no '/', ':', whitespace or NUL."""
    if (
        not name
        or len(name.encode()) > 15
        or name in (".", "..")
        or any(c in name for c in "/:\0")
        or any(c.isspace() for c in name)
    ):
        raise CNIError(ERR_INVALID_ENV if what.startswith("CNI_") else ERR_INVALID_CONFIG,
                       f"invalid interface name in {what}: {name!r}",
                       "1-15 bytes, not '.' or '..', without '/', ':', whitespace or NUL")
    return name


def parse_cni_args(text: str) -> dict[str, str]:
    """'K1=V1;K2=V2' -> dict; "" -> {}.

    As the reference's types.LoadArgs: the text is split on ';' and every pair, an empty one too
    ('IgnoreUnknown=1;;'), must hold exactly one '='. Raises CNIError 4 (invalid environment) naming the pair.
    """
    args: dict[str, str] = {}
    if not text:
        return args
    for pair in text.split(";"):
        if pair.count("=") != 1:
            raise CNIError(ERR_INVALID_ENV, f"invalid CNI_ARGS pair {pair!r} in {text!r}", "expected KEY=VALUE")
        key, value = pair.split("=")
        args[key] = value
    return args


@dataclass
class Request:
    command: str
    config: dict[str, Any]
    raw_config: bytes
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    cni_path: list[str] = field(default_factory=list)
    cni_args: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    dry_run: bool = False
    lang: str = "en"  # of the explanations in the rendered script (--lang, CNIPLUG_LANG)
    # With --dry-run, the result the call would return as far as it is known without running it (an interface
    # plugin sets it; `cniplug net --dry-run` hands it to the next plugin as prevResult). None: not set.
    dry_result: dict[str, Any] | None = None

    @property
    def version(self) -> str:
        return str(self.config.get("cniVersion", ""))

    @property
    def name(self) -> str:
        return str(self.config["name"])

    def runtime_config(self, key: str) -> Any:
        """runtimeConfig value, keys matched case-insensitively (containerd sends HostPort, podman hostPort)."""
        rc = self.config.get("runtimeConfig")
        if not isinstance(rc, dict):
            return None
        for k, v in rc.items():
            if k.lower() == key.lower():
                return v
        return None

    def known_args(self, known: tuple[str, ...]) -> dict[str, str]:
        """CNI_ARGS restricted to `known` keys; unknown keys are an error unless IgnoreUnknown is set."""
        ignore = self.cni_args.get("IgnoreUnknown", "").lower() in ("1", "true")
        unknown = [k for k in self.cni_args if k not in known and k != "IgnoreUnknown"]
        if unknown and not ignore:
            raise CNIError(ERR_INVALID_ENV, f"CNI_ARGS: unknown args {unknown}",
                           "set IgnoreUnknown=1 to ignore them")
        return {k: v for k, v in self.cni_args.items() if k in known}

    def prev_result(self) -> dict[str, Any] | None:
        """`prevResult` in the 1.1.0 shape, None when absent or {}.

        Raises CNIError naming the field when it is not a result (spec: "Chained plugins"): 1 for a
        result shape of a version we do not speak (0.1/0.2), else 7 (invalid config).
        """
        prev = self.config.get("prevResult")
        if prev is None or prev == {}:
            return None
        try:
            return to_current(prev)
        except CNIError as err:
            code = err.code if err.code == ERR_INCOMPATIBLE_VERSION else ERR_INVALID_CONFIG
            raise CNIError(code, f"invalid field 'prevResult': {err.msg}", err.details) from None

    def result_json(self, result: dict[str, Any]) -> str:
        return json.dumps(from_current(result, self.version or CURRENT_VERSION))


def read_config(raw: bytes) -> dict[str, Any]:
    try:
        config = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:  # RecursionError: nested too deep
        raise CNIError(ERR_DECODE, "failed to decode network configuration on stdin", str(err)) from None
    if not isinstance(config, dict):
        raise CNIError(ERR_DECODE, "network configuration on stdin must be a JSON object")
    return config


def parse_request(environ: Mapping[str, str], raw: bytes, dry_run: bool = False) -> Request:
    """Validate env and stdin for the verb; everything wrong here is a CNIError with the spec's code."""
    command = environ.get("CNI_COMMAND", "")
    if command not in VERBS:
        raise CNIError(ERR_INVALID_ENV, f"unknown CNI_COMMAND: {command}")
    if command == "VERSION":
        return Request(command=command, config={}, raw_config=raw, env=dict(environ))
    missing = [var for var in REQUIRED_ENV[command] if not environ.get(var)]
    if "CNI_CONTAINERID" in missing:
        raise CNIError(ERR_UNKNOWN_CONTAINER if command != "ADD" else ERR_INVALID_ENV,
                       "missing containerID", "CNI_CONTAINERID is empty or unset")
    if missing:
        raise CNIError(ERR_INVALID_ENV, f"required env variables [{','.join(missing)}] missing")
    config = read_config(raw)
    req = Request(
        command=command,
        config=config,
        raw_config=raw,
        container_id=environ.get("CNI_CONTAINERID", ""),
        netns=environ.get("CNI_NETNS", ""),
        ifname=environ.get("CNI_IFNAME", ""),
        cni_path=[p for p in environ.get("CNI_PATH", "").split(":") if p],
        cni_args=parse_cni_args(environ.get("CNI_ARGS", "")),
        env=dict(environ),
        dry_run=dry_run,
    )
    if req.container_id and not NAME_RE.match(req.container_id):
        raise CNIError(ERR_INVALID_ENV, f"invalid CNI_CONTAINERID {req.container_id!r}",
                       "must match " + NAME_RE.pattern)
    if command in ("ADD", "DEL", "CHECK"):
        check_ifname(req.ifname)
    if req.netns and ("\0" in req.netns or "\n" in req.netns or not req.netns.startswith("/")):
        raise CNIError(ERR_INVALID_ENV, f"invalid CNI_NETNS {req.netns!r}", "must be an absolute path")
    name = config.get("name")
    if name is None or name == "":
        raise CNIError(ERR_INVALID_CONFIG, "missing network name", "field 'name' is required")
    if not isinstance(name, str):
        raise CNIError(ERR_INVALID_CONFIG, f"field 'name' must be a string, got {name!r}")
    if not NAME_RE.match(name):
        raise CNIError(ERR_INVALID_CONFIG, f"invalid network name {name!r}", "must match " + NAME_RE.pattern)
    version = config.get("cniVersion", "0.1.0")
    if not isinstance(version, str):
        raise CNIError(ERR_INVALID_CONFIG, f"invalid cniVersion {version!r}", "must be a string")
    check_version(version)
    if command == "CHECK" and version_tuple(version) < (0, 4, 0):
        raise CNIError(ERR_INCOMPATIBLE_VERSION, "config version does not allow CHECK",
                       f"cniVersion {version} < 0.4.0")
    if command in ("GC", "STATUS") and version_tuple(version) < (1, 1, 0):
        raise CNIError(ERR_INCOMPATIBLE_VERSION, f"config version does not allow {command}",
                       f"cniVersion {version} < 1.1.0")
    args = config.get("args")
    if args is not None and not isinstance(args, dict):
        raise CNIError(ERR_INVALID_CONFIG, f"field 'args' must be an object, got {args!r}",
                       "conventions: args holds namespaced keys such as args.cni")
    if command in ("ADD", "CHECK"):
        req.prev_result()  # a malformed prevResult is refused before anything runs, even where unused
    return req


def request_version(raw: bytes) -> str:
    """The cniVersion the caller asked for, when stdin parses and names a supported one, else CURRENT_VERSION.

    Errors carry it (spec: "Error" results use the request's cniVersion), also those raised before the
    config is accepted (a bad CNI_IFNAME, CNI_ARGS pair, network name; CHECK on a 0.3.x config).
    """
    try:
        asked = json.loads(raw).get("cniVersion") if raw.strip() else None
    except (ValueError, AttributeError, UnicodeDecodeError, RecursionError):
        return CURRENT_VERSION
    return asked if asked in SUPPORTED_VERSIONS else CURRENT_VERSION


Handler = Callable[[Request], Any]


class DeferredLog(logging.Handler):
    """Keeps a call's log records in memory; `flush_to_file` writes them to `logFile` at the end.

    Bad input must change nothing on the host, the log file included, and some input is only found bad
    deep inside a plugin (an mtu out of range): so the file is opened only once the call is over and was
    not refused. Records still go to stderr as they happen.

    The file is JSON Lines (one object per line, for log shippers): each record as {"time", "level",
    "msg"}, then one record per call, {"time", "level", "event": "call", "plugin", "verb", "containerId",
    "netns", "ifName", "network", "durationMs", "outcome": "ok" | "error", "error": {"code", "msg"} on
    an error, "script": the script that ran (or was rolled back), else null, "rolledBack"}.
    """

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.dumps({"time": stamp(record.created), "level": record.levelname,
                                      "msg": record.getMessage()}) + "\n")

    def flush_to_file(self, call: dict[str, Any] | None = None) -> None:
        """Append the records, then `call` (the call's record) if given, to the file (created 0600; a
        symlink is not followed). Never raises."""
        if call is not None:
            self.lines.append(json.dumps({"time": stamp(), "level": "INFO", "event": "call", **call}) + "\n")
        if not self.lines:
            return
        try:
            # O_NONBLOCK: a FIFO no one reads is an error (ENXIO) at once, not a call blocked forever.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
                         | os.O_NONBLOCK, 0o600)
            try:
                os.set_blocking(fd, True)  # a reader is there: let it take the whole record
                os.write(fd, "".join(self.lines).encode(errors="replace"))
            finally:
                os.close(fd)
        except OSError as err:
            print(f"cniplug: cannot write logFile {self.path}: {err.strerror or err}", file=sys.stderr)
        self.lines.clear()


def stamp(when: float | None = None) -> str:
    """RFC 3339 UTC time with milliseconds, e.g. 2026-11-29T13:45:01.123Z."""
    when = time.time() if when is None else when
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when)) + f".{int(when % 1 * 1000):03d}Z"


# The script the current call ran (common.perform records it), for the call's log record.
SCRIPT: dict[str, Any] = {"text": None, "rolledBack": False}


def record_script(text: str, rolled_back: bool = False) -> None:
    """Note the script this call ran (or rolled back): it goes into the logFile's call record."""
    SCRIPT["text"] = text if SCRIPT["text"] is None else SCRIPT["text"] + text
    SCRIPT["rolledBack"] = SCRIPT["rolledBack"] or rolled_back


def log_file(config: dict[str, Any]) -> str:
    """config['logFile'] -> an absolute path, "" when absent. Raises CNIError 7 naming the field otherwise."""
    path = config.get("logFile")
    if path is None or path == "":
        return ""
    if not isinstance(path, str) or not path.startswith("/") or any(c in path for c in "\0\n"):
        raise CNIError(ERR_INVALID_CONFIG, f"field 'logFile' must be an absolute path, got {path!r}")
    return path


def setup_logging(config: dict[str, Any]) -> DeferredLog | None:
    """Logs go to stderr at `logLevel` (default warning); with `logFile` also to that file, written only
    when the call was not refused (DeferredLog). Returns that handler, None without a logFile.
    Raises CNIError 7 for a malformed logFile or logLevel."""
    level_name = config.get("logLevel", "warning")
    level = getattr(logging, level_name.upper(), None) if isinstance(level_name, str) else None
    if not isinstance(level, int) or level_name.lower() not in ("debug", "info", "warning", "error"):
        raise CNIError(ERR_INVALID_CONFIG, f"field 'logLevel' must be debug, info, warning or error, "
                       f"got {level_name!r}")
    path = log_file(config)
    root = logging.getLogger("cniplug")
    # The log file always gets INFO, where each call records the script it ran; stderr keeps logLevel.
    root.setLevel(min(level, logging.INFO) if path else level)
    stderr = next((h for h in root.handlers if type(h) is logging.StreamHandler), None)
    if stderr is None:
        stderr = logging.StreamHandler(sys.stderr)
        root.addHandler(stderr)
    stderr.setLevel(level)
    for handler in [h for h in root.handlers if isinstance(h, DeferredLog)]:
        root.removeHandler(handler)
    if not path:
        return None
    deferred = DeferredLog(path)
    deferred.setLevel(min(level, logging.INFO))
    root.addHandler(deferred)
    return deferred


# Codes that say the request itself was refused: nothing may change, not even the log file.
REFUSED = (ERR_INCOMPATIBLE_VERSION, ERR_UNSUPPORTED_FIELD, ERR_UNKNOWN_CONTAINER, ERR_INVALID_ENV, ERR_IO,
           ERR_DECODE, ERR_INVALID_CONFIG)


def run(handlers: Mapping[str, Handler], about: str, argv: list[str] | None = None,
        environ: Mapping[str, str] | None = None, stdin: Any = None, stdout: Any = None) -> int:
    """Run one CNI invocation. Returns the exit code; prints result, script or error JSON on stdout.

    argv: the plugin's arguments (fastpath.parse_options): an unknown one or a bad value prints usage
    on stderr and returns 2 before stdin is read; --help prints it on stdout and returns 0.
    """
    argv = sys.argv[1:] if argv is None else argv
    environ = os.environ if environ is None else environ
    stdin = sys.stdin.buffer if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    opts, problem = parse_options(argv, environ.get("CNIPLUG_LANG", ""))
    if problem:
        # Refused before stdin is read or anything runs: a mistyped --dry-run must not run a real ADD.
        print(f"{about}: {problem}\n{USAGE.format(prog=about).splitlines()[0]}", file=sys.stderr)
        return 2
    if opts["help"]:
        stdout.write(USAGE.format(prog=about))
        return 0
    dry_run = bool(opts["dry_run"])
    if opts["version"] or (not environ.get("CNI_COMMAND") and not dry_run):
        # Like skel: no CNI_COMMAND prints an "about" banner on stderr and exits 0.
        print(f"{about}\nCNI protocol versions supported: {', '.join(SUPPORTED_VERSIONS)}", file=sys.stderr)
        return 0
    version = ""  # the accepted config's; errors before that answer in request_version(raw)
    raw = b""
    deferred: DeferredLog | None = None
    refused = True
    started = time.monotonic()
    call: dict[str, Any] = {}
    SCRIPT.update(text=None, rolledBack=False)
    try:
        try:
            raw = stdin.read(MAX_STDIN + 1)
        except OSError as err:
            raise CNIError(ERR_IO, "failed to read network configuration from stdin", str(err)) from None
        if len(raw) > MAX_STDIN:
            raise CNIError(ERR_IO, f"network configuration on stdin is larger than {MAX_STDIN} bytes")
        if environ.get("CNI_COMMAND") == "VERSION":
            stdout.write(json.dumps({"cniVersion": request_version(raw), "supportedVersions": SUPPORTED_VERSIONS})
                         + "\n")
            return 0
        req = parse_request(environ, raw, dry_run=dry_run)
        req.lang = opts["lang"]
        version = req.version
        deferred = setup_logging(req.config)
        call = {"plugin": str(req.config.get("type", "")), "verb": req.command, "containerId": req.container_id,
                "netns": req.netns, "ifName": req.ifname, "network": req.name, "outcome": "ok"}
        handler = handlers.get(req.command)
        if handler is None:
            # Verbs a plugin has nothing to do for (e.g. STATUS on loopback) succeed silently.
            return 0
        out = handler(req)
        refused = False
        if out is None and dry_run:
            # CHECK, STATUS and stateless verbs only read: their script changes nothing.
            from cniplug import i18n

            out = "#!/bin/bash\n" + i18n.say("nothing_to_run", req.lang, verb=req.command) + "\n"
        if isinstance(out, str):
            stdout.write(out if out.endswith("\n") else out + "\n")
        elif out is not None:
            stdout.write(req.result_json(out) + "\n")
        return 0
    except CNIError as err:
        refused = err.code in REFUSED
        call.update(outcome="error", error={"code": err.code, "msg": err.msg})
        log.debug("error %s: %s (%s)", err.code, err.msg, err.details)
        stdout.write(err.to_json(version or request_version(raw)) + "\n")
        return 1
    except Exception as err:  # never a traceback on stdout: report it as a CNI error, trace on stderr
        refused = False
        call.update(outcome="error", error={"code": ERR_INTERNAL, "msg": f"internal error: {type(err).__name__}"})
        log.exception("internal error")
        stdout.write(CNIError(ERR_INTERNAL, f"internal error: {type(err).__name__}", str(err)).to_json(
            version or request_version(raw)) + "\n")
        return 1
    finally:
        if deferred is not None and not refused and not dry_run:
            deferred.flush_to_file({**call, "durationMs": round((time.monotonic() - started) * 1000, 1),
                                    "script": SCRIPT["text"], "rolledBack": SCRIPT["rolledBack"]})


def main(handlers: Mapping[str, Handler], about: str) -> None:
    sys.exit(run(handlers, about))
