"""`cniplug net add|check|del|gc|status NETWORK [NETNS]`: run a whole network configuration list as libcni does.

A runtime (containerd, CRI-O, podman's CNI backend) does not exec one plugin: it loads a config list and
runs it through libcni. This module does what libcni 1.1/1.2 (`libcni/api.go`, `libcni/conf.go`) and its
`cnitool` front end do, so the two can take turns on one attachment:

- **Loading** (conf.go): the `.conflist` files of NETCONFPATH (default /etc/cni/net.d) in lexical order,
  the first whose `name` matches; else the `.conf`/`.json` files, a single config upconverted to a
  list of one. A file that does not parse before the match is an error, as in libcni.
- **Runtime values** (cnitool): the container id is `cnitool-` + the first 10 bytes of sha512(NETNS as an
  absolute path) in hex; CNI_IFNAME (default eth0), CNI_ARGS (`K=V;K=V`), CAP_ARGS (a JSON object),
  CNI_PATH (a colon list).
- **Per plugin** (api.go buildOneConfig): the plugin's JSON with the list's `name` and `cniVersion`, the
  `prevResult`, and `runtimeConfig` holding only the CAP_ARGS keys of the capabilities the plugin declares
  true; exec'd from CNI_PATH with this process's environment plus CNI_* and that JSON on stdin.
- **Verbs**: ADD in order, each plugin's result the next one's prevResult, the last result cached;
  CHECK (list version >= 0.4.0, not `disableCheck`) and DEL (in reverse) with the cached result; DEL removes
  the cache. GC (libcni 1.2): DEL every cached attachment of the network that is not valid, then, for
  a list of version >= 1.1.0, GC each plugin; STATUS each plugin of a 1.1.0 list.
- **The cache**: `/var/lib/cni/results/<network>-<containerid>-<ifname>`, JSON of kind `cniCacheV1`, the
  fields and encodings of libcni's `cachedInfo` (the list's bytes base64-encoded, as Go encodes []byte).

Like libcni, a failed ADD is not undone here: the runtime (or the user) calls DEL.

`--dry-run` prints one bash script for the list: for each cniplug plugin (a type in cniplug.plugins.PLUGINS) its own
--dry-run script, rendered in this process with the stdin it would get (with a built-in IPAM, the IPAM
plugin's script for the on-disk store too); for any other plugin the exec libcni would make, commented
out, since its effects cannot be shown. A later plugin's prevResult is the earlier one's dry-run result
(`Request.dry_result`, or the prevResult passed through for a plugin that sets none, as chained plugins do).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cniplug import i18n
from cniplug.spec import (
    ERR_DECODE,
    ERR_INTERNAL,
    ERR_INVALID_CONFIG,
    ERR_INVALID_ENV,
    CNIError,
    from_current,
    to_current,
)

DEFAULT_NETCONFPATH = "/etc/cni/net.d"
CACHE_DIR = "/var/lib/cni"  # libcni's CacheDir; the results are in CACHE_DIR/results
CACHE_KIND = "cniCacheV1"
NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"
VERBS = ("add", "check", "del", "gc", "status")


def say(key: str, lang: str, **fields: object) -> str:
    """The message `key` of i18n.MESSAGES in `lang` (en, zh) with `fields` filled in; CNIError 7 for a field
    with a line break."""
    return i18n.text(key, lang, **fields)


# ------------------------------------------------------------------------------------------- config


@dataclass
class PluginConf:
    """One plugin of a list: its parsed JSON object and the bytes it came from (libcni NetworkConfig)."""

    conf: dict[str, Any]
    raw: bytes

    @property
    def type(self) -> str:
        return str(self.conf["type"])

    def capabilities(self) -> dict[str, bool]:
        caps = self.conf.get("capabilities") or {}
        return {k: v for k, v in caps.items() if v is True}

    def description(self) -> str:
        """libcni's pluginDescription: type="T" name="N" (name only when the plugin config has one)."""
        out = f"type={json.dumps(self.type)}"
        if self.conf.get("name"):
            out += f" name={json.dumps(self.conf['name'])}"
        return out


@dataclass
class ConfList:
    """A network configuration list (libcni NetworkConfigList); `raw` is what the cache stores."""

    name: str
    version: str
    plugins: list[PluginConf]
    raw: bytes
    disable_check: bool = False
    disable_gc: bool = False
    source: str = ""


def go_json(value: Any) -> bytes:
    """JSON as Go's encoding/json writes a map: compact, keys sorted, <>& and U+2028/9 escaped, UTF-8."""
    text = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                    ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text.encode()


def _object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:  # RecursionError: nested too deep
        raise CNIError(ERR_DECODE, f"error parsing {what}: {err}") from None
    if not isinstance(value, dict):
        raise CNIError(ERR_DECODE, f"error parsing {what}: not a JSON object")
    return value


def conf_from_bytes(raw: bytes) -> PluginConf:
    """A plugin config (libcni ConfFromBytes): a JSON object with a non-empty string `type`; the typed
    fields libcni decodes (name, cniVersion: strings; capabilities: booleans) must have their types.
    CNIError 6/7 naming the field otherwise."""
    conf = _object(raw, "configuration")
    for key in ("name", "cniVersion", "type"):
        if key in conf and not isinstance(conf[key], str):
            raise CNIError(ERR_INVALID_CONFIG, f"error parsing configuration: field {key!r} must be a string, "
                           f"got {conf[key]!r}")
    kind = conf.get("type")
    if not kind:
        raise CNIError(ERR_INVALID_CONFIG, "error parsing configuration: missing 'type'")
    if "/" in kind or kind in (".", "..") or not all(c.isprintable() and not c.isspace() for c in kind):
        raise CNIError(ERR_INVALID_CONFIG, f"error parsing configuration: field 'type' must be a plugin name, "
                       f"got {kind!r}")
    caps = conf.get("capabilities")
    if caps is not None and (not isinstance(caps, dict) or not all(isinstance(v, bool) for v in caps.values())):
        raise CNIError(ERR_INVALID_CONFIG, f"error parsing configuration: field 'capabilities' must map names "
                       f"to true/false, got {caps!r}")
    return PluginConf(conf, raw)


def conflist_from_bytes(raw: bytes, source: str = "") -> ConfList:
    """A config list (libcni ConfListFromBytes): `name` (string), optional `cniVersion` (string),
    `disableCheck`/`disableGC` (booleans), a non-empty `plugins` list of plugin configs."""
    data = _object(raw, "configuration list")
    what = "error parsing configuration list"
    if "name" not in data:
        raise CNIError(ERR_INVALID_CONFIG, f"{what}: no name")
    if not isinstance(data["name"], str):
        raise CNIError(ERR_INVALID_CONFIG, f"{what}: invalid name {data['name']!r}")
    version = data.get("cniVersion", "")
    if not isinstance(version, str):
        raise CNIError(ERR_INVALID_CONFIG, f"{what}: invalid cniVersion {version!r}")
    flags = {}
    for key in ("disableCheck", "disableGC"):
        flags[key] = data.get(key, False)
        if not isinstance(flags[key], bool):
            raise CNIError(ERR_INVALID_CONFIG, f"{what}: invalid {key} {flags[key]!r}")
    if "plugins" not in data:
        raise CNIError(ERR_INVALID_CONFIG, f"{what}: no 'plugins' key")
    plugins = data["plugins"]
    if not isinstance(plugins, list):
        raise CNIError(ERR_INVALID_CONFIG, f"{what}: invalid 'plugins' {plugins!r}")
    if not plugins:
        raise CNIError(ERR_INVALID_CONFIG, f"{what}: no plugins in list")
    parsed = []
    for i, plugin in enumerate(plugins):
        try:
            parsed.append(conf_from_bytes(go_json(plugin)))
        except CNIError as err:
            raise CNIError(err.code, f"failed to parse plugin config {i}: {err.msg}") from None
    return ConfList(data["name"], version, parsed, raw, flags["disableCheck"], flags["disableGC"], source)


def conflist_from_conf(plugin: PluginConf, source: str = "") -> ConfList:
    """A single config upconverted to a list of one (libcni ConfListFromConf)."""
    raw = go_json({"name": plugin.conf.get("name", ""), "cniVersion": plugin.conf.get("cniVersion", ""),
                   "plugins": [plugin.conf]})
    return conflist_from_bytes(raw, source)


def conf_files(directory: str, extensions: tuple[str, ...]) -> list[str]:
    """Regular files (not directories) of `directory` ending in one of `extensions`, sorted; [] if the
    directory does not exist (libcni ConfFiles + sort.Strings)."""
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    return sorted(os.path.join(directory, e.name) for e in entries
                  if not e.is_dir() and os.path.splitext(e.name)[1] in extensions)


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise CNIError(ERR_INVALID_CONFIG, f"error reading {path}: {err.strerror}") from None


def load_conflist(directory: str, name: str, lang: str = "en") -> ConfList:
    """The network `name` from `directory`, as libcni LoadConfList finds it: .conflist files first (in
    lexical order), then .conf and .json files. A file that fails to parse before the match is an error.
    CNIError 7 when no file names the network."""
    for path in conf_files(directory, (".conflist",)):
        try:
            found = conflist_from_bytes(_read(path), path)
        except CNIError as err:
            raise CNIError(err.code, f"{path}: {err.msg}") from None
        if found.name == name:
            return found
    for path in conf_files(directory, (".conf", ".json")):
        try:
            single = conf_from_bytes(_read(path))
        except CNIError as err:
            raise CNIError(err.code, f"{path}: {err.msg}") from None
        if single.conf.get("name") == name:
            return conflist_from_conf(single, path)
    raise CNIError(ERR_INVALID_CONFIG, say("net_not_found", lang, name=json.dumps(name), dir=directory))


# ------------------------------------------------------------------------------------------ runtime


@dataclass
class Runtime:
    """What libcni's RuntimeConf holds: one attachment's ids, CNI_ARGS pairs, CAP_ARGS."""

    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: list[tuple[str, str]] = field(default_factory=list)
    capability_args: dict[str, Any] = field(default_factory=dict)


def container_id_of(netns: str) -> str:
    """cnitool's container id for NETNS: 'cnitool-' + hex of the first 10 bytes of sha512(absolute path)."""
    return "cnitool-" + hashlib.sha512(absolute(netns).encode()).hexdigest()[:20]


def absolute(path: str) -> str:
    """Go's filepath.Abs: joined to the working directory and cleaned ('//x' is '/x', unlike normpath)."""
    out = os.path.normpath(os.path.join(os.getcwd(), path))
    return "/" + out.lstrip("/") if out.startswith("//") else out


def parse_cni_args(text: str, lang: str = "en") -> list[tuple[str, str]]:
    """cnitool's CNI_ARGS rule: 'K=V;K=V', every pair exactly one '=' with a non-empty key and value."""
    pairs: list[tuple[str, str]] = []
    if not text:
        return pairs
    for pair in text.split(";"):
        kv = pair.split("=")
        if len(kv) != 2 or not kv[0] or not kv[1]:
            raise CNIError(ERR_INVALID_ENV, say("net_bad_args_pair", lang, pair=repr(pair)))
        pairs.append((kv[0], kv[1]))
    return pairs


def _plain(value: str, what: str, lang: str = "en") -> str:
    """Refuse NUL, control characters and line breaks: values go into the environment of a plugin and into
    comment lines of the --dry-run script, where a line break would end the comment."""
    if any(c in i18n._UNSAFE for c in value):
        raise CNIError(ERR_INVALID_ENV, say("net_line_break", lang, what=what, value=ascii(value)))
    return value


def check_ifname(name: str, lang: str = "en") -> str:
    """libcni ValidateInterfaceName: 1-15 bytes, not . or .., no '/', ':' or whitespace."""
    if (not name or len(name.encode()) > 15 or name in (".", "..")
            or any(c in "/:" or c.isspace() or c in i18n._UNSAFE for c in name)):
        raise CNIError(ERR_INVALID_ENV, say("net_bad_ifname", lang, name=ascii(name)))
    return name


def check_name(value: str, what: str, lang: str = "en") -> str:
    """libcni's network name / container id rule: ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$ (also safe in a file name)."""
    if not value or value[0] in "_.-" or any(c not in NAME_CHARS for c in value):
        raise CNIError(ERR_INVALID_CONFIG if what == "network name" else ERR_INVALID_ENV,
                       say("net_bad_name", lang, what=what, value=ascii(value)))
    return value


def runtime_from_env(environ: dict[str, str], netns: str, lang: str = "en") -> Runtime:
    """cnitool's RuntimeConf from the environment and the NETNS argument ("" for gc/status without one)."""
    caps: dict[str, Any] = {}
    raw_caps = environ.get("CAP_ARGS", "")
    if raw_caps:
        try:
            caps = json.loads(raw_caps)
        except (ValueError, RecursionError) as err:
            raise CNIError(ERR_INVALID_ENV, say("net_bad_cap_args", lang, value=ascii(raw_caps), why=f" ({err})")) \
                from None
        if not isinstance(caps, dict):
            raise CNIError(ERR_INVALID_ENV, say("net_bad_cap_args", lang, value=ascii(raw_caps), why=""))
    args = parse_cni_args(_plain(environ.get("CNI_ARGS", ""), "CNI_ARGS", lang), lang)
    ifname = environ["CNI_IFNAME"] if "CNI_IFNAME" in environ else "eth0"
    rt = Runtime(ifname=ifname, args=args, capability_args=caps)
    if netns:
        rt.netns = _plain(absolute(netns), "NETNS", lang)
        rt.container_id = container_id_of(netns)
    return rt


def runtime_config(plugin: PluginConf, rt: Runtime) -> dict[str, Any]:
    """libcni injectRuntimeConfig: the CAP_ARGS entries whose key is a capability the plugin declares true."""
    return {cap: rt.capability_args[cap] for cap in plugin.capabilities() if cap in rt.capability_args}


def build_conf(plugin: PluginConf, name: str, version: str, prev: dict[str, Any] | None,
               rt: Runtime | None) -> bytes:
    """libcni buildOneConfig: the plugin's JSON with the list's name and cniVersion, prevResult (when there is
    one) and runtimeConfig (when a declared capability has a CAP_ARGS value; it replaces any in the file)."""
    conf = dict(plugin.conf)
    conf["name"] = name
    conf["cniVersion"] = version
    if prev is not None:
        conf["prevResult"] = prev
    if rt is not None:
        rc = runtime_config(plugin, rt)
        if rc:
            conf["runtimeConfig"] = rc
    return go_json(conf)


def plugin_env(verb: str, rt: Runtime, cni_path: list[str]) -> dict[str, str]:
    """The CNI_* variables libcni sets (invoke.Args.AsEnv); they override this process's environment."""
    return {
        "CNI_COMMAND": verb,
        "CNI_CONTAINERID": rt.container_id,
        "CNI_NETNS": rt.netns,
        "CNI_ARGS": ";".join(f"{k}={v}" for k, v in rt.args),
        "CNI_IFNAME": rt.ifname,
        "CNI_PATH": ":".join(cni_path),
    }


def find_in_path(kind: str, paths: list[str], lang: str = "en") -> str:
    """libcni FindInPath: the first regular file named `kind` in the CNI_PATH directories."""
    if not paths:
        raise CNIError(ERR_INVALID_ENV, say("net_no_path", lang))
    for directory in paths:
        path = os.path.join(directory, kind)
        if os.path.isfile(path):
            return path
    raise CNIError(ERR_INVALID_CONFIG, say("net_no_plugin", lang, kind=repr(kind), paths=":".join(paths)))


# -------------------------------------------------------------------------------------------- cache


def cache_path(network: str, rt: Runtime, cache_dir: str = "") -> str:
    """libcni getCacheFilePath: <cache dir>/results/<network>-<containerid>-<ifname>."""
    if not network or not rt.container_id or not rt.ifname:
        raise CNIError(ERR_INVALID_ENV, f"cache file path requires network name ({network!r}), container ID "
                       f"({rt.container_id!r}), and interface name ({rt.ifname!r})")
    return os.path.join(cache_dir or CACHE_DIR, "results", f"{network}-{rt.container_id}-{rt.ifname}")


def cache_bytes(result: dict[str, Any], conflist: ConfList, rt: Runtime) -> bytes:
    """libcni cacheAdd's file: cachedInfo's fields in its order, Config as base64 (Go's []byte), empty
    cniArgs/capabilityArgs left out (omitempty), netns as libcni >= 1.2 writes it (older ones ignore it)."""
    parts: list[tuple[str, Any]] = [
        ("kind", CACHE_KIND), ("containerId", rt.container_id),
        ("config", base64.b64encode(conflist.raw).decode()), ("ifName", rt.ifname),
        ("networkName", conflist.name),
    ]
    if rt.netns:
        parts.append(("netns", rt.netns))
    if rt.args:
        parts.append(("cniArgs", [list(p) for p in rt.args]))
    if rt.capability_args:
        parts.append(("capabilityArgs", rt.capability_args))
    if result:
        parts.append(("result", result))
    return b"{" + b",".join(go_json(k) + b":" + go_json(v) for k, v in parts) + b"}"


def write_cache(path: str, data: bytes) -> None:
    """Write the cache file 0600 (its directory 0700, as libcni), atomically (a reader never sees half)."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_cached_result(path: str, version: str) -> dict[str, Any] | None:
    """libcni getCachedResult: the `result` of a cniCacheV1 file (or a legacy file holding a bare result),
    converted to the list's cniVersion; None when there is no file. CNIError 6 when it cannot be read as one."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None  # as libcni: a missing or unreadable cache is no cached result
    try:
        info = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise CNIError(ERR_DECODE, f"cached result {path} is not JSON: {err}") from None
    if not isinstance(info, dict):
        raise CNIError(ERR_DECODE, f"cached result {path} is not a JSON object")
    result = info.get("result") if info.get("kind") == CACHE_KIND else info
    if not isinstance(result, dict) or not result:
        raise CNIError(ERR_DECODE, f"cached result {path} holds no result")
    return convert(result, version)


def convert(result: dict[str, Any], version: str) -> dict[str, Any]:
    """A result as `version` (libcni GetAsVersion); unchanged when it already is, or not one we convert."""
    if result.get("cniVersion") == version:
        return result
    try:
        return from_current(to_current(result), version)
    except CNIError as err:
        raise CNIError(err.code, f"failed to convert cached result to config version {version!r}: {err.msg}") \
            from None


@dataclass
class Attachment:
    """A cached attachment (libcni GetCachedAttachments' NetworkAttachment)."""

    network: str
    container_id: str
    ifname: str
    netns: str
    args: list[tuple[str, str]]
    capability_args: dict[str, Any]


def cached_attachments(cache_dir: str = "") -> list[Attachment]:
    """Every readable cniCacheV1 file of <cache dir>/results with a network and interface name, in file name
    order (libcni GetCachedAttachments); anything else is skipped."""
    directory = os.path.join(cache_dir or CACHE_DIR, "results")
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        try:
            with open(os.path.join(directory, name), "rb") as f:
                info = json.loads(f.read())
        except (OSError, ValueError, UnicodeDecodeError, RecursionError):
            continue
        if not isinstance(info, dict) or info.get("kind") != CACHE_KIND:
            continue
        if not info.get("ifName") or not info.get("networkName"):
            continue
        args = info.get("cniArgs") or []
        out.append(Attachment(str(info["networkName"]), str(info.get("containerId", "")), str(info["ifName"]),
                              str(info.get("netns") or ""), [(str(a[0]), str(a[1])) for a in args if len(a) == 2],
                              info.get("capabilityArgs") or {}))
    return out


# ------------------------------------------------------------------------------------------- invoke


def result_from_stdout(stdout: bytes, conf_version: str) -> dict[str, Any]:
    """libcni fixupResultVersion: the plugin's result object; its cniVersion is the config's when missing."""
    try:
        result = json.loads(stdout)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise CNIError(ERR_DECODE, f"failed to unmarshal raw result: {err}") from None
    if result is None:
        result = {}
    if not isinstance(result, dict):
        raise CNIError(ERR_DECODE, "failed to unmarshal raw result: not a JSON object")
    if not result.get("cniVersion"):
        result["cniVersion"] = conf_version
    return result


def plugin_error(rc: int, stdout: bytes, stderr: bytes) -> CNIError:
    """libcni RawExec.pluginErr: the CNI error JSON on stdout; without one, the plugin's stderr."""
    if not stdout.strip():
        if not stderr.strip():
            return CNIError(ERR_INTERNAL, f"netplugin failed with no error message: exit status {rc}")
        return CNIError(ERR_INTERNAL, f"netplugin failed: {stderr.decode(errors='replace').strip()!r}")
    try:
        body = json.loads(stdout)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        return CNIError(ERR_INTERNAL, f"netplugin failed but error parsing its diagnostic message "
                        f"{stdout.decode(errors='replace')!r}: {err}")
    if not isinstance(body, dict):
        return CNIError(ERR_INTERNAL, f"netplugin failed with {stdout.decode(errors='replace')!r}")
    code = body.get("code")
    return CNIError(code if isinstance(code, int) else 0, str(body.get("msg", "")), str(body.get("details") or ""))


def exec_plugin(path: str, stdin: bytes, cni_env: dict[str, str]) -> bytes:
    """Exec a plugin as libcni's RawExec does: this process's environment with `cni_env` over it, `stdin`
    on its stdin; its stdout, its stderr passed on when it succeeds. A "text file busy" (the file is being
    replaced) is retried 5 times a second apart. CNIError from the plugin's error JSON when it fails."""
    env = {**os.environ, **cni_env}
    for attempt in range(6):
        try:
            proc = subprocess.run([path], input=stdin, env=env, capture_output=True, check=False)
        except OSError as err:
            if err.errno == 26 and attempt < 5:  # ETXTBSY
                time.sleep(1)
                continue
            raise CNIError(ERR_INTERNAL, f"cannot exec {path}: {err.strerror}") from None
        if proc.returncode != 0:
            raise plugin_error(proc.returncode, proc.stdout, proc.stderr)
        if proc.stderr:
            sys.stderr.write(proc.stderr.decode(errors="replace"))
        return proc.stdout
    raise CNIError(ERR_INTERNAL, f"cannot exec {path}: text file busy")


# A step of a list: (verb, plugin, its path, its stdin, the CNI_* env, prevResult) -> its result (ADD) or None.
Invoke = Callable[[str, PluginConf, str, bytes, dict[str, str], dict[str, Any] | None], dict[str, Any] | None]


def real_invoke(verb: str, plugin: PluginConf, path: str, stdin: bytes, env: dict[str, str],
                prev: dict[str, Any] | None) -> dict[str, Any] | None:
    """The Invoke of a real run: exec the plugin; its result for ADD (version fixed up), else None."""
    out = exec_plugin(path, stdin, env)
    return result_from_stdout(out, json.loads(stdin).get("cniVersion", "")) if verb == "ADD" else None


def failed(plugin: PluginConf, verb: str, err: CNIError, lang: str) -> CNIError:
    """A plugin's failure as one line: which plugin, the verb, the CNI error code and message (and details)."""
    msg = say("net_plugin_failed", lang, plugin=_flat(plugin.description()), verb=verb.lower(), code=err.code,
              msg=_flat(err.msg))
    return CNIError(err.code or ERR_INTERNAL, msg, _flat(err.details))


def _flat(text: str) -> str:
    """One line: control characters and line breaks of a plugin's message become spaces."""
    return "".join(" " if c in i18n._UNSAFE else c for c in text)


# ------------------------------------------------------------------------------------------- verbs


def version_at_least(version: str, minimum: tuple[int, ...]) -> bool:
    """version >= minimum, numerically ('' is 0.1.0, as libcni reads a missing cniVersion)."""
    try:
        parts = tuple(int(p) for p in (version or "0.1.0").split("."))
    except ValueError:
        raise CNIError(ERR_INVALID_CONFIG, f"invalid cniVersion {version!r}") from None
    return parts >= minimum


@dataclass
class Net:
    """One `cniplug net` call: the list, the runtime values, CNI_PATH, how a plugin is invoked."""

    conflist: ConfList
    rt: Runtime
    cni_path: list[str]
    invoke: Invoke = real_invoke
    lang: str = "en"
    cache_dir: str = ""
    write: Callable[[str, bytes], None] = write_cache
    remove: Callable[[str], None] = lambda path: _unlink(path)

    def step(self, verb: str, plugin: PluginConf, prev: dict[str, Any] | None, rt: Runtime | None = None,
             extra: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """Invoke one plugin of the list for `verb`; CNIError naming the plugin when it fails."""
        rt = rt or self.rt
        try:
            path = find_in_path(plugin.type, self.cni_path, self.lang)
            if extra:  # GC/STATUS: only name, cniVersion (and the valid attachments) injected
                stdin = go_json({**plugin.conf, "name": self.conflist.name, "cniVersion": self.conflist.version,
                                 **extra})
            elif verb in ("GC", "STATUS"):
                stdin = go_json({**plugin.conf, "name": self.conflist.name, "cniVersion": self.conflist.version})
            else:
                stdin = build_conf(plugin, self.conflist.name, self.conflist.version, prev, rt)
            env = plugin_env(verb, rt if verb not in ("GC", "STATUS") else Runtime(), self.cni_path)
            for key, value in env.items():  # values from a cache file too (GC): no line break may reach a script
                _plain(value, key, self.lang)
            return self.invoke(verb, plugin, path, stdin, env, prev)
        except CNIError as err:
            raise failed(plugin, verb, err, self.lang) from None

    def cached(self, rt: Runtime | None = None) -> dict[str, Any] | None:
        """The cached result of this attachment (or `rt`'s) in the list's cniVersion; None without a cache."""
        return read_cached_result(cache_path(self.conflist.name, rt or self.rt, self.cache_dir),
                                  self.conflist.version)

    def add(self) -> dict[str, Any] | None:
        """ADD each plugin in order, each result the next one's prevResult; cache and return the last result."""
        check_name(self.conflist.name, "network name", self.lang)
        check_name(self.rt.container_id, "containerID", self.lang)
        check_ifname(self.rt.ifname, self.lang)
        result: dict[str, Any] | None = None
        for plugin in self.conflist.plugins:
            result = self.step("ADD", plugin, result)
        self.write(cache_path(self.conflist.name, self.rt, self.cache_dir),
                   cache_bytes(result or {}, self.conflist, self.rt))
        return result

    def check(self) -> None:
        """CHECK each plugin in order with the cached result (libcni CheckNetworkList)."""
        check_ifname(self.rt.ifname, self.lang)
        if not version_at_least(self.conflist.version, (0, 4, 0)):
            raise CNIError(ERR_INVALID_CONFIG, say("net_no_check", self.lang, version=self.conflist.version))
        if self.conflist.disable_check:
            return
        cached = self.cached()
        for plugin in self.conflist.plugins:
            self.step("CHECK", plugin, cached)

    def delete(self, rt: Runtime | None = None) -> None:
        """DEL each plugin in reverse order with the cached result (none below 0.4.0), then drop the cache.
        A cache that cannot be read is dropped and DEL goes on without it (libcni >= 1.2)."""
        rt = rt or self.rt
        check_name(rt.container_id, "containerID", self.lang)
        check_ifname(rt.ifname, self.lang)
        path = cache_path(self.conflist.name, rt, self.cache_dir)
        cached = None
        if version_at_least(self.conflist.version, (0, 4, 0)):
            try:
                cached = self.cached(rt)
            except CNIError:
                self.remove(path)
        for plugin in reversed(self.conflist.plugins):
            self.step("DEL", plugin, cached, rt)
        self.remove(path)

    def gc(self, valid: list[tuple[str, str]] | None) -> None:
        """libcni 1.2 GCNetworkList: DEL every cached attachment of this network not in `valid` (container id,
        ifname), then for a list of version >= 1.1.0 GC each plugin, with cni.dev/valid-attachments when
        `valid` is not None. Nothing when disableGC. Errors are collected; CNIError with all of them."""
        if self.conflist.disable_gc:
            return
        errors: list[str] = []
        keep = set(valid or [])
        for a in cached_attachments(self.cache_dir):
            if a.network != self.conflist.name or (a.container_id, a.ifname) in keep:
                continue
            rt = Runtime(a.container_id, a.netns, a.ifname, a.args, a.capability_args)
            try:
                self.delete(rt)
            except CNIError as err:
                errors.append(say("net_gc_stale", self.lang, cid=a.container_id, ifname=a.ifname, msg=err.msg))
        if version_at_least(self.conflist.version, (1, 1, 0)):
            extra = None
            if valid is not None:
                extra = {"cni.dev/valid-attachments": [{"containerID": c, "ifname": i} for c, i in valid]}
            for plugin in self.conflist.plugins:
                try:
                    self.step("GC", plugin, None, extra=extra)
                except CNIError as err:
                    errors.append(err.msg)
        if errors:
            raise CNIError(ERR_INTERNAL, "; ".join(errors))

    def status(self) -> None:
        """STATUS each plugin of a list of version >= 1.1.0 (nothing below); the first error is the answer."""
        if not version_at_least(self.conflist.version, (1, 1, 0)):
            return
        for plugin in self.conflist.plugins:
            self.step("STATUS", plugin, None)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# ------------------------------------------------------------------------------------------ dry run


def ours(kind: str) -> bool:
    """Is `kind` a cniplug plugin type (the registry, cniplug.plugins.PLUGINS)? Those render their --dry-run here."""
    from cniplug.plugins import PLUGINS

    return kind in PLUGINS


def render_ours(kind: str, stdin: bytes, env: dict[str, str], lang: str) -> tuple[str, dict[str, Any] | None]:
    """Run a cniplug plugin's handler for --dry-run in this process, with the stdin and CNI_* environment the
    exec would get: (its script, its dry-run result or None). A plugin that returns a result instead of a
    script changes nothing by itself (its script says so); CNIError as the plugin would answer."""
    out, result, _ = render_full(kind, stdin, env, lang)
    return out, result


def render_full(kind: str, stdin: bytes, env: dict[str, str],
                lang: str) -> tuple[str, dict[str, Any] | None, dict[str, Any] | None]:
    """render_ours, plus the dry-run result in the 1.1.0 shape, before it is converted to the request's
    cniVersion (a 1.0.0 result has no interface `mtu`, which the next plugin's dry run needs)."""
    from cniplug import skel
    from cniplug.cli import plugin_handlers

    handlers, _ = plugin_handlers(kind)
    req = skel.parse_request(env, stdin, dry_run=True)
    req.lang = lang
    handler = handlers.get(req.command)
    try:
        out = handler(req) if handler is not None else None
    except CNIError:
        raise
    except Exception as err:  # as skel.run answers it: a CNI error, never a traceback
        raise CNIError(ERR_INTERNAL, f"internal error: {type(err).__name__}", str(err)) from None
    raw = req.dry_result
    if isinstance(out, dict):
        raw, out = out, None
    result = None
    if raw is not None:  # in the request's cniVersion, as the plugin prints its result
        result = json.loads(req.result_json(raw))
    if not isinstance(out, str):
        out = "#!/bin/bash\n" + i18n.say("nothing_to_run", lang, verb=req.command) + "\n"
    return out, result, raw


def _body(script: str) -> list[str]:
    """A plugin's script without its #! line, to be nested in the list's script."""
    lines = script.rstrip("\n").split("\n")
    return lines[1:] if lines and lines[0].startswith("#!") else lines


@dataclass
class DryRun:
    """Collects the list's script: Net.invoke, Net.write and Net.remove of a --dry-run call."""

    lang: str = "en"
    lines: list[str] = field(default_factory=list)
    count: int = 0
    unknown: bool = False  # an ADD of a plugin that is not ours passed no result on: the next prevResult is unknown
    # The last ADD's dry-run result in the 1.1.0 shape (None after a plugin that is not ours): the prevResult the
    # next cniplug plugin renders with, so that it sees what the list's cniVersion leaves out (interface mtu).
    full: dict[str, Any] | None = None

    def comment(self, key: str, **fields: object) -> None:
        self.lines.append(i18n.say(key, self.lang, **fields))

    def invoke(self, verb: str, plugin: PluginConf, path: str, stdin: bytes, env: dict[str, str],
               prev: dict[str, Any] | None) -> dict[str, Any] | None:
        self.count += 1
        self.lines.append("")
        if not ours(plugin.type):
            self.comment("net_dry_foreign", n=self.count, verb=verb, path=path)
            self.comment("net_dry_foreign_why")
            self.commented_exec(path, stdin, env)
            if verb == "ADD":
                self.comment("net_dry_foreign_result")
                self.unknown = self.unknown or prev is None
                self.full = None
            return prev
        if verb == "ADD" and prev is None and self.unknown:
            shown = len(self.lines)
            try:
                return self.render(verb, plugin, path, stdin, env, prev)
            except CNIError as err:  # e.g. a chained plugin: it needs the prevResult a foreign plugin would give
                del self.lines[shown:]
                self.comment("net_dry_unknown_prev", n=self.count, kind=plugin.type, path=path,
                             error=_flat(f"CNI error {err.code}: {err.msg}"))
                self.commented_exec(path, stdin, env)
                return None
        return self.render(verb, plugin, path, stdin, env, prev)

    def commented_exec(self, path: str, stdin: bytes, env: dict[str, str]) -> None:
        assigns = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        self.lines.append(f"# {assigns} {shlex.quote(path)} <<'EOF'")
        self.lines.append("# " + json.dumps(json.loads(stdin), sort_keys=True))
        self.lines.append("# EOF")

    def render(self, verb: str, plugin: PluginConf, path: str, stdin: bytes, env: dict[str, str],
               prev: dict[str, Any] | None) -> dict[str, Any] | None:
        """A cniplug plugin's step: its --dry-run script (and its IPAM's); its dry-run result for ADD."""
        ipam = plugin.conf.get("ipam")
        ipam_type = ipam.get("type") if isinstance(ipam, dict) else None
        store = ""
        if isinstance(ipam_type, str) and ours(ipam_type) and verb in ("ADD", "DEL", "GC"):
            store, _ = render_ours(ipam_type, stdin, env, self.lang)
        self.comment("net_dry_ours", n=self.count, verb=verb, kind=plugin.type, path=path)
        seen = stdin
        if verb == "ADD" and prev is not None and self.full is not None:
            seen = go_json({**json.loads(stdin), "prevResult": self.full})
        script, result, full = render_full(plugin.type, seen, env, self.lang)
        if verb == "ADD":
            self.full = full if full is not None else self.full
        if store and verb == "ADD":
            self.nest(store, "net_dry_ipam", ipam_type)
        self.nest(script, "net_dry_plugin", plugin.type)
        if store and verb != "ADD":
            self.nest(store, "net_dry_ipam", ipam_type)
        if verb != "ADD":
            return None
        return result if result is not None else prev

    def nest(self, script: str, key: str, kind: object) -> None:
        """A plugin's script in a subshell; one without a command is only its comments (bash refuses `( )`)."""
        self.comment(key, kind=kind)
        body = _body(script)
        if any(line.strip() and not line.startswith("#") and line != "set -e" for line in body):
            self.lines += ["(", *body, ")"]
        else:
            self.lines += [line for line in body if line.startswith("#")]

    def write(self, path: str, data: bytes) -> None:
        self.lines.append("")
        self.comment("net_dry_cache", path=path)
        directory = os.path.dirname(path)
        self.lines.append(f"mkdir -p -m 0700 {shlex.quote(directory)}")
        self.lines.append(f"(umask 077 && printf '%s' {shlex.quote(data.decode())} > {shlex.quote(path)})")

    def remove(self, path: str) -> None:
        self.lines.append("")
        self.comment("net_dry_uncache", path=path)
        self.lines.append(f"rm -f -- {shlex.quote(path)}")


def main(verb: str, network: str, netns: str, dry_run: bool, lang: str,
         environ: dict[str, str] | None = None) -> int:
    """`cniplug net VERB NETWORK [NETNS]`: 0 on success (ADD prints the result, --dry-run the script).
    CNIError with one line for bad input or a failed plugin (its code and message)."""
    environ = dict(os.environ) if environ is None else environ
    if verb in ("add", "check", "del") and not netns:
        raise CNIError(ERR_INVALID_ENV, say("net_need_netns", lang, verb=verb))
    directory = environ.get("NETCONFPATH") or DEFAULT_NETCONFPATH
    conflist = load_conflist(directory, network, lang)
    rt = runtime_from_env(environ, netns, lang)
    cni_path = [_plain(p, "CNI_PATH", lang) for p in environ.get("CNI_PATH", "").split(":") if p]
    dry = DryRun(lang)
    net = Net(conflist, rt, cni_path, lang=lang)
    if dry_run:
        net.invoke, net.write, net.remove = dry.invoke, dry.write, dry.remove
    result: dict[str, Any] | None = None
    if verb == "add":
        result = net.add()
    elif verb == "check":
        net.check()
    elif verb == "del":
        net.delete()
    elif verb == "gc":
        net.gc([(rt.container_id, check_ifname(rt.ifname, lang))] if netns else None)
    else:
        net.status()
    if dry_run:
        who = say("net_dry_who", lang, cid=rt.container_id, netns=rt.netns, ifname=rt.ifname) if netns else ""
        head = ["#!/bin/bash",
                i18n.say("net_dry_head", lang, verb=verb.upper(), net=conflist.name, file=conflist.source,
                         n=len(conflist.plugins), who=who),
                i18n.say("net_dry_subshell", lang), "set -e"]
        if not dry.count:
            head.append(i18n.say("net_dry_none", lang, verb=verb.upper()))
        sys.stdout.write("\n".join(head + dry.lines) + "\n")
    elif result is not None:
        sys.stdout.write(json.dumps(result, indent=4, ensure_ascii=False) + "\n")
    return 0
