"""The CNI entry point: read env + stdin, validate them per verb, dispatch, print result or error.

Every plugin's main() is `skel.run(handlers)`. Nothing here touches the host.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
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
    """'K1=V1;K2=V2' -> dict. Empty pairs are skipped; a pair without exactly one '=' is an error."""
    args: dict[str, str] = {}
    for pair in text.split(";"):
        if not pair:
            continue
        if pair.count("=") != 1:
            raise CNIError(ERR_INVALID_ENV, f"invalid CNI_ARGS pair {pair!r}", "expected KEY=VALUE")
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
        prev = self.config.get("prevResult")
        if prev is None or prev == {}:
            return None
        try:
            return to_current(prev)
        except CNIError as err:
            raise CNIError(err.code, f"invalid prevResult: {err.msg}", err.details) from None

    def result_json(self, result: dict[str, Any]) -> str:
        return json.dumps(from_current(result, self.version or CURRENT_VERSION))


def read_config(raw: bytes) -> dict[str, Any]:
    try:
        config = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
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
    if not isinstance(name, str) or not name:
        raise CNIError(ERR_INVALID_CONFIG, "missing network name", "field 'name' is required")
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
    return req


Handler = Callable[[Request], Any]


def setup_logging(config: dict[str, Any]) -> None:
    """Logs go to stderr; a config key 'logFile' (absolute path) adds a file, created 0600."""
    level = str(config.get("logLevel", "warning")).upper()
    root = logging.getLogger("cniplug")
    root.setLevel(getattr(logging, level, logging.WARNING))
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
    path = config.get("logFile")
    if isinstance(path, str) and path.startswith("/") and "\0" not in path:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            handler = logging.StreamHandler(os.fdopen(fd, "a"))
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            root.addHandler(handler)
        except OSError as err:
            log.warning("cannot open logFile %s: %s", path, err)


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
    version = CURRENT_VERSION
    try:
        try:
            raw = stdin.read(MAX_STDIN + 1)
        except OSError as err:
            raise CNIError(ERR_IO, "failed to read network configuration from stdin", str(err)) from None
        if len(raw) > MAX_STDIN:
            raise CNIError(ERR_IO, f"network configuration on stdin is larger than {MAX_STDIN} bytes")
        if environ.get("CNI_COMMAND") == "VERSION":
            try:
                asked = json.loads(raw).get("cniVersion") if raw.strip() else None
            except (ValueError, AttributeError):
                asked = None
            echo = asked if asked in SUPPORTED_VERSIONS else CURRENT_VERSION
            stdout.write(json.dumps({"cniVersion": echo, "supportedVersions": SUPPORTED_VERSIONS}) + "\n")
            return 0
        req = parse_request(environ, raw, dry_run=dry_run)
        req.lang = opts["lang"]
        version = req.version
        setup_logging(req.config)
        handler = handlers.get(req.command)
        if handler is None:
            # Verbs a plugin has nothing to do for (e.g. STATUS on loopback) succeed silently.
            return 0
        out = handler(req)
        if out is None and dry_run:
            # CHECK, STATUS and stateless verbs only read: their script changes nothing.
            out = f"#!/bin/bash\n# {req.command} changes nothing on the host: there is no command to run.\n"
        if isinstance(out, str):
            stdout.write(out if out.endswith("\n") else out + "\n")
        elif out is not None:
            stdout.write(req.result_json(out) + "\n")
        return 0
    except CNIError as err:
        log.debug("error %s: %s (%s)", err.code, err.msg, err.details)
        stdout.write(err.to_json(version if isinstance(version, str) else CURRENT_VERSION) + "\n")
        return 1
    except Exception as err:  # never a traceback on stdout: report it as a CNI error, trace on stderr
        log.exception("internal error")
        stdout.write(CNIError(ERR_INTERNAL, f"internal error: {type(err).__name__}", str(err)).to_json(
            version if isinstance(version, str) else CURRENT_VERSION) + "\n")
        return 1


def main(handlers: Mapping[str, Handler], about: str) -> None:
    sys.exit(run(handlers, about))
