"""`cniplug net` without root: config loading and selection (libcni conf.go), capability filtering and
the per-plugin stdin (api.go buildOneConfig), the cniCacheV1 file, and the verbs' order with a fake exec."""

from __future__ import annotations

import base64
import io
import json
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest

from cniplug import net
from cniplug.spec import CNIError

REPO = Path(__file__).resolve().parents[2]


def write(directory: Path, name: str, value: Any) -> Path:
    path = directory / name
    path.write_text(value if isinstance(value, str) else json.dumps(value))
    return path


def lst(name: str, *types: str, version: str = "1.0.0", **extra: Any) -> dict[str, Any]:
    return {"cniVersion": version, "name": name, "plugins": [{"type": t} for t in types], **extra}


# ---- loading and selection


def test_conflist_files_in_lexical_order_first_match_wins(tmp_path: Path) -> None:
    write(tmp_path, "20-b.conflist", lst("tntnet", "second"))
    write(tmp_path, "10-a.conflist", lst("tntnet", "first"))
    write(tmp_path, "05-other.conflist", lst("other", "x"))
    found = net.load_conflist(str(tmp_path), "tntnet")
    assert [p.type for p in found.plugins] == ["first"]
    assert found.source == str(tmp_path / "10-a.conflist")
    assert found.raw == (tmp_path / "10-a.conflist").read_bytes(), "the cache keeps the file's own bytes"


def test_conflist_before_conf_and_json_and_other_extensions_ignored(tmp_path: Path) -> None:
    write(tmp_path, "00-a.conf", {"cniVersion": "1.0.0", "name": "tntnet", "type": "from-conf"})
    write(tmp_path, "99-z.conflist", lst("tntnet", "from-conflist"))
    write(tmp_path, "01-a.yaml", lst("tntnet", "ignored"))
    (tmp_path / "02-dir.conflist").mkdir()
    assert [p.type for p in net.load_conflist(str(tmp_path), "tntnet").plugins] == ["from-conflist"]


def test_single_conf_or_json_is_upconverted_to_a_list_of_one(tmp_path: Path) -> None:
    write(tmp_path, "10-a.json", {"cniVersion": "0.4.0", "name": "tntjson", "type": "cniplug-ptp", "mtu": 1400})
    found = net.load_conflist(str(tmp_path), "tntjson")
    assert (found.name, found.version, [p.conf for p in found.plugins]) == (
        "tntjson", "0.4.0", [{"cniVersion": "0.4.0", "name": "tntjson", "type": "cniplug-ptp", "mtu": 1400}])
    # Its bytes are the list libcni makes of it (Go marshals a map with sorted keys, compact).
    assert json.loads(found.raw) == {"cniVersion": "0.4.0", "name": "tntjson", "plugins": [found.plugins[0].conf]}
    assert b" " not in found.raw


def test_not_found_and_missing_directory(tmp_path: Path) -> None:
    write(tmp_path, "10-a.conflist", lst("other", "x"))
    with pytest.raises(CNIError) as err:
        net.load_conflist(str(tmp_path), "tntnone")
    assert err.value.msg == f'no net configuration with name "tntnone" in {tmp_path}'
    with pytest.raises(CNIError, match="no net configuration"):
        net.load_conflist(str(tmp_path / "absent"), "tntnone")
    with pytest.raises(CNIError) as err:
        net.load_conflist(str(tmp_path), "tntnone", lang="zh")
    assert "没有名为" in err.value.msg


def test_a_broken_file_before_the_match_is_an_error_as_in_libcni(tmp_path: Path) -> None:
    write(tmp_path, "10-broken.conflist", "{not json")
    write(tmp_path, "20-good.conflist", lst("tntnet", "x"))
    with pytest.raises(CNIError) as err:
        net.load_conflist(str(tmp_path), "tntnet")
    assert "10-broken.conflist" in err.value.msg and "error parsing configuration list" in err.value.msg


@pytest.mark.parametrize(("data", "expect"), [
    ({"plugins": [{"type": "x"}]}, "no name"),
    ({"name": 5, "plugins": [{"type": "x"}]}, "invalid name"),
    ({"name": "n", "cniVersion": 1, "plugins": [{"type": "x"}]}, "invalid cniVersion"),
    ({"name": "n", "disableCheck": "yes", "plugins": [{"type": "x"}]}, "invalid disableCheck"),
    ({"name": "n"}, "no 'plugins' key"),
    ({"name": "n", "plugins": {}}, "invalid 'plugins'"),
    ({"name": "n", "plugins": []}, "no plugins in list"),
    ({"name": "n", "plugins": [{"type": "x"}, {"mtu": 1}]},
     "plugin config 1: error parsing configuration: missing 'type'"),
    ({"name": "n", "plugins": [{"type": "../x"}]}, "field 'type' must be a plugin name"),
    ({"name": "n", "plugins": [{"type": "x", "capabilities": {"portMappings": "yes"}}]}, "'capabilities'"),
    ([1, 2], "not a JSON object"),
])
def test_conflist_errors_name_the_field(data: Any, expect: str) -> None:
    with pytest.raises(CNIError) as err:
        net.conflist_from_bytes(json.dumps(data).encode())
    assert expect in err.value.msg
    assert err.value.code in (6, 7)


# ---- runtime values, capabilities, the stdin of each plugin


def test_container_id_is_cnitools() -> None:
    # The value cnitool 1.1.2 itself wrote into /var/lib/cni/results for `cnitool add NET /run/netns/tntr`.
    assert net.container_id_of("/run/netns/tntr") == "cnitool-d5e27e9bdd7acf061b07"
    assert net.absolute("//run//netns/../netns/tntr") == "/run/netns/tntr"


def test_runtime_from_env() -> None:
    rt = net.runtime_from_env({"CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=p", "CAP_ARGS": '{"mac": "x"}'},
                              "/run/netns/tntr")
    assert rt.ifname == "eth0" and rt.args == [("IgnoreUnknown", "1"), ("K8S_POD_NAME", "p")]
    assert rt.capability_args == {"mac": "x"} and rt.netns == "/run/netns/tntr"
    assert net.runtime_from_env({"CNI_IFNAME": "net1"}, "/x").ifname == "net1"
    with pytest.raises(CNIError, match="CNI_ARGS 中的键值对"):
        net.runtime_from_env({"CNI_ARGS": "A"}, "/x", "zh")
    for env, expect in (({"CNI_ARGS": "A=1;;B=2"}, "invalid CNI_ARGS pair ''"),
                        ({"CNI_ARGS": "A=1=2"}, "invalid CNI_ARGS pair 'A=1=2'"),
                        ({"CNI_ARGS": "A=1\nrm -rf /=x"}, "line break"),
                        ({"CAP_ARGS": "[1]"}, "must be a JSON object"),
                        ({"CAP_ARGS": "{"}, "must be a JSON object, got '{' (Expecting")):
        with pytest.raises(CNIError) as err:
            net.runtime_from_env(env, "/x")
        assert expect in err.value.msg and err.value.code == 4


def test_capabilities_filter_runtime_config() -> None:
    plugin = net.conf_from_bytes(json.dumps({
        "type": "portmap", "capabilities": {"portMappings": True, "bandwidth": False, "ips": True},
        "runtimeConfig": {"stale": 1}}).encode())
    rt = net.Runtime("c", "/n", "eth0", [], {"portMappings": [{"hostPort": 1}], "bandwidth": {"a": 1}, "mac": "m"})
    assert net.runtime_config(plugin, rt) == {"portMappings": [{"hostPort": 1}]}
    conf = json.loads(net.build_conf(plugin, "tntnet", "1.0.0", {"cniVersion": "1.0.0"}, rt))
    assert conf["runtimeConfig"] == {"portMappings": [{"hostPort": 1}]}, "replaces the file's runtimeConfig"
    assert (conf["name"], conf["cniVersion"], conf["prevResult"]) == ("tntnet", "1.0.0", {"cniVersion": "1.0.0"})
    # No declared capability with a value: the file's own runtimeConfig stays, no prevResult key without one.
    bare = json.loads(net.build_conf(plugin, "tntnet", "1.0.0", None, net.Runtime()))
    assert bare["runtimeConfig"] == {"stale": 1} and "prevResult" not in bare


def test_plugin_env_is_libcnis() -> None:
    rt = net.Runtime("cid", "/run/netns/x", "eth1", [("A", "1"), ("B", "2")])
    assert net.plugin_env("DEL", rt, ["/a", "/b"]) == {
        "CNI_COMMAND": "DEL", "CNI_CONTAINERID": "cid", "CNI_NETNS": "/run/netns/x", "CNI_ARGS": "A=1;B=2",
        "CNI_IFNAME": "eth1", "CNI_PATH": "/a:/b"}


# ---- the cache


def test_cache_file_has_libcnis_fields_and_encodings(tmp_path: Path) -> None:
    conflist = net.conflist_from_bytes(b'{"name":"tntnet","cniVersion":"1.0.0","plugins":[{"type":"x"}]}\n')
    rt = net.Runtime("cnitool-1", "/run/netns/a", "eth0", [("A", "1")], {"portMappings": []})
    result = {"cniVersion": "1.0.0", "ips": [{"address": "10.235.0.2/24", "interface": 2}], "dns": {}}
    data = net.cache_bytes(result, conflist, rt)
    info = json.loads(data)
    assert list(info) == ["kind", "containerId", "config", "ifName", "networkName", "netns", "cniArgs",
                          "capabilityArgs", "result"]
    assert info["kind"] == "cniCacheV1" and base64.b64decode(info["config"]) == conflist.raw
    assert info["cniArgs"] == [["A", "1"]] and info["result"] == result
    assert b" " not in data and b'"dns":{},"ips"' in data, "compact, map keys sorted as Go writes them"
    # omitempty: no args, no capability args, no result
    bare = json.loads(net.cache_bytes({}, conflist, net.Runtime("c", "", "eth0")))
    assert list(bare) == ["kind", "containerId", "config", "ifName", "networkName"]
    path = net.cache_path("tntnet", rt, str(tmp_path))
    assert path == str(tmp_path / "results" / "tntnet-cnitool-1-eth0")
    net.write_cache(path, data)
    assert (tmp_path / "results").stat().st_mode & 0o777 == 0o700
    assert Path(path).stat().st_mode & 0o777 == 0o600
    assert net.read_cached_result(path, "1.0.0") == result
    assert net.read_cached_result(path, "0.4.0")["ips"][0]["version"] == "4", "converted to the list's version"
    assert net.read_cached_result(str(tmp_path / "absent"), "1.0.0") is None
    Path(path).write_text('{"cniVersion": "0.4.0", "ips": []}')  # a legacy cache: the bare result
    assert net.read_cached_result(path, "0.4.0") == {"cniVersion": "0.4.0", "ips": []}
    Path(path).write_text("garbage")
    with pytest.raises(CNIError):
        net.read_cached_result(path, "1.0.0")


def test_cached_attachments_skip_what_is_not_a_v1_attachment(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    write(results, "b", {"kind": "cniCacheV1", "containerId": "c2", "ifName": "eth0", "networkName": "n",
                         "netns": "/x", "cniArgs": [["A", "1"]]})
    write(results, "a", {"kind": "cniCacheV1", "containerId": "c1", "ifName": "eth1", "networkName": "n"})
    write(results, "c", {"kind": "other", "containerId": "c3", "ifName": "eth0", "networkName": "n"})
    write(results, "d", {"kind": "cniCacheV1", "containerId": "c4", "networkName": "n"})
    write(results, "e", "not json")
    found = net.cached_attachments(str(tmp_path))
    assert [(a.container_id, a.ifname, a.netns, a.args) for a in found] == [
        ("c1", "eth1", "", []), ("c2", "eth0", "/x", [("A", "1")])]


# ---- the verbs, with a fake exec


class Fake:
    def __init__(self, fail: str = "") -> None:
        self.calls: list[tuple[str, str, dict[str, Any], dict[str, str]]] = []
        self.fail = fail

    def __call__(self, verb: str, plugin: net.PluginConf, path: str, stdin: bytes, env: dict[str, str],
                 prev: dict[str, Any] | None) -> dict[str, Any] | None:
        conf = json.loads(stdin)
        self.calls.append((verb, plugin.type, conf, env))
        if plugin.type == self.fail:
            raise CNIError(7, "bad thing", "a detail")
        if verb != "ADD":
            return None
        return {"cniVersion": conf["cniVersion"], "ips": [*(conf.get("prevResult") or {}).get("ips", []),
                                                          {"address": f"10.235.0.{len(self.calls)}/24"}]}


def make(tmp_path: Path, data: dict[str, Any], fake: Fake, netns: str = "/run/netns/tnt-a") -> net.Net:
    for t in {p["type"] for p in data["plugins"]}:
        (tmp_path / "bin").mkdir(exist_ok=True)
        (tmp_path / "bin" / t).write_text("")
    conflist = net.conflist_from_bytes(json.dumps(data).encode())
    rt = net.runtime_from_env({}, netns)
    return net.Net(conflist, rt, [str(tmp_path / "bin")], invoke=fake, cache_dir=str(tmp_path / "cache"))


def test_add_chains_prev_results_and_caches_the_last(tmp_path: Path) -> None:
    fake = Fake()
    n = make(tmp_path, lst("tntnet", "one", "two", "three"), fake)
    result = n.add()
    assert [c[1] for c in fake.calls] == ["one", "two", "three"]
    assert "prevResult" not in fake.calls[0][2]
    assert fake.calls[2][2]["prevResult"]["ips"] == [{"address": "10.235.0.1/24"}, {"address": "10.235.0.2/24"}]
    assert result is not None and len(result["ips"]) == 3
    assert n.cached() == result
    fake.calls.clear()
    n.check()
    assert [(c[0], c[1], c[2]["prevResult"]) for c in fake.calls] == [("CHECK", t, result) for t in
                                                                       ("one", "two", "three")]
    fake.calls.clear()
    n.delete()
    assert [(c[0], c[1], c[2]["prevResult"]) for c in fake.calls] == [("DEL", t, result) for t in
                                                                       ("three", "two", "one")]
    assert n.cached() is None
    fake.calls.clear()
    n.delete()  # again: no cache, no prevResult, still every plugin
    assert [("prevResult" in c[2], c[1]) for c in fake.calls] == [(False, "three"), (False, "two"), (False, "one")]


def test_a_failing_plugin_stops_the_list_and_is_reported_with_its_code(tmp_path: Path) -> None:
    fake = Fake(fail="two")
    n = make(tmp_path, lst("tntnet", "one", "two", "three"), fake)
    with pytest.raises(CNIError) as err:
        n.add()
    assert [c[1] for c in fake.calls] == ["one", "two"]
    assert err.value.code == 7
    assert err.value.msg == 'plugin type="two" failed (add): CNI error 7: bad thing'
    assert err.value.details == "a detail"
    assert n.cached() is None, "no cache after a failed ADD"
    n.lang = "zh"
    with pytest.raises(CNIError, match="插件"):
        n.add()


def test_missing_plugin_binary(tmp_path: Path) -> None:
    n = make(tmp_path, lst("tntnet", "one"), Fake())
    n.cni_path = [str(tmp_path / "empty")]
    with pytest.raises(CNIError, match="failed to find plugin 'one'"):
        n.add()


def test_check_rules(tmp_path: Path) -> None:
    fake = Fake()
    make(tmp_path, lst("tntnet", "one", disableCheck=True), fake).check()
    assert fake.calls == []
    with pytest.raises(CNIError, match="does not support the CHECK command"):
        make(tmp_path, lst("tntnet", "one", version="0.3.1"), fake).check()


def test_del_below_040_has_no_prev_result_and_a_corrupt_cache_is_dropped(tmp_path: Path) -> None:
    fake = Fake()
    n = make(tmp_path, lst("tntnet", "one", version="0.3.1"), fake)
    n.add()
    fake.calls.clear()
    n.delete()
    assert "prevResult" not in fake.calls[0][2]
    n = make(tmp_path, lst("tntnet", "one"), fake)
    path = Path(net.cache_path("tntnet", n.rt, n.cache_dir))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("garbage")
    fake.calls.clear()
    n.delete()
    assert len(fake.calls) == 1 and not path.exists()


def test_gc_deletes_stale_attachments_then_gcs_each_plugin(tmp_path: Path) -> None:
    fake = Fake()
    data = lst("tntnet", "one", "two", version="1.1.0")
    keep, stale = make(tmp_path, data, fake, "/run/netns/tnt-a"), make(tmp_path, data, fake, "/run/netns/tnt-b")
    keep.add()
    stale.add()
    other = make(tmp_path, lst("tntother", "one", version="1.1.0"), fake, "/run/netns/tnt-c")
    other.add()
    fake.calls.clear()
    keep.gc([(keep.rt.container_id, "eth0")])
    assert [(c[0], c[1], c[3]["CNI_CONTAINERID"]) for c in fake.calls] == [
        ("DEL", "two", stale.rt.container_id), ("DEL", "one", stale.rt.container_id), ("GC", "one", ""),
        ("GC", "two", "")]
    assert fake.calls[0][3]["CNI_NETNS"] == "/run/netns/tnt-b", "DEL with the netns from the cache"
    assert fake.calls[2][2]["cni.dev/valid-attachments"] == [{"containerID": keep.rt.container_id,
                                                              "ifname": "eth0"}]
    assert fake.calls[2][3]["CNI_IFNAME"] == "" and "prevResult" not in fake.calls[2][2]
    assert keep.cached() is not None and stale.cached() is None and other.cached() is not None
    fake.calls.clear()
    keep.gc(None)  # as cnitool: no valid attachments given, every cached one of the network goes, no GC key
    assert [c[0] for c in fake.calls] == ["DEL", "DEL", "GC", "GC"]
    assert "cni.dev/valid-attachments" not in fake.calls[2][2]
    fake.calls.clear()
    make(tmp_path, {**data, "disableGC": True}, fake).gc(None)
    make(tmp_path, lst("tntnet", "one", version="1.0.0"), fake).gc(None)
    assert fake.calls == [], "disableGC; and below 1.1.0 no GC verb (no stale attachment left either)"


def test_status_only_for_11_lists(tmp_path: Path) -> None:
    fake = Fake()
    make(tmp_path, lst("tntnet", "one", version="1.0.0"), fake, "").status()
    assert fake.calls == []
    make(tmp_path, lst("tntnet", "one", "two", version="1.1.0"), fake, "").status()
    assert [(c[0], c[1], c[3]["CNI_CONTAINERID"]) for c in fake.calls] == [("STATUS", "one", ""),
                                                                          ("STATUS", "two", "")]
    with pytest.raises(CNIError, match='type="two" failed'):
        make(tmp_path, lst("tntnet", "one", "two", version="1.1.0"), Fake(fail="two"), "").status()


def test_bad_names_are_refused_before_any_plugin_runs(tmp_path: Path) -> None:
    fake = Fake()
    n = make(tmp_path, lst("tnt/../../etc", "one"), fake)
    with pytest.raises(CNIError, match="network name"):
        n.add()
    n = make(tmp_path, lst("tntnet", "one"), fake)
    n.rt.ifname = "../x"
    for verb in (n.add, n.check, n.delete):
        with pytest.raises(CNIError, match="CNI_IFNAME"):
            verb()
    assert fake.calls == []


# ---- --dry-run: a plugin that is not ours is a commented exec


def test_dry_run_of_a_foreign_plugin_is_commented_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "net.d"
    conf.mkdir()
    write(conf, "10.conflist", {"cniVersion": "1.0.0", "name": "tntnet",
                                "plugins": [{"type": "tuning", "capabilities": {"mac": True}}]})
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "tuning").write_text("")
    env = {"NETCONFPATH": str(conf), "CNI_PATH": str(tmp_path / "bin"), "CAP_ARGS": '{"mac": "02:00:00:00:00:01"}'}
    out = io.StringIO()
    with redirect_stdout(out):
        assert net.main("del", "tntnet", "/run/netns/tnt-x", True, "en", env) == 0
    text = out.getvalue()
    code = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert code == ["set -e", f"rm -f -- {net.CACHE_DIR}/results/tntnet-{net.container_id_of('/run/netns/tnt-x')}-eth0"]
    assert "# CNI_COMMAND=DEL CNI_CONTAINERID=cnitool-" in text and f"{tmp_path}/bin/tuning <<'EOF'" in text
    assert '"runtimeConfig": {"mac": "02:00:00:00:00:01"}' in text
    assert "its effects are not shown" in text.lower()
    with redirect_stdout(io.StringIO()) as zh:
        net.main("del", "tntnet", "/run/netns/tnt-x", True, "zh", env)
    assert "不是 cniplug 插件" in zh.getvalue()


def test_add_check_del_need_a_netns() -> None:
    with pytest.raises(CNIError, match="needs NETNS"):
        net.main("add", "tntnet", "", False, "en", {})


# ---- the example lists in contrib/


EXAMPLES = {
    "cniplug-bridge-full.conflist": ["cniplug-bridge", "cniplug-portmap", "cniplug-firewall", "cniplug-tuning",
                                     "cniplug-bandwidth"],
    "cniplug-ptp-portmap.conflist": ["cniplug-ptp", "cniplug-portmap"],
}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_lists_parse(name: str) -> None:
    found = net.load_conflist(str(REPO / "contrib"), json.loads((REPO / "contrib" / name).read_text())["name"])
    assert found.source == str(REPO / "contrib" / name)
    assert [p.type for p in found.plugins] == EXAMPLES[name]
    assert found.version == "1.0.0"


def test_every_contrib_list_parses() -> None:
    for path in sorted((REPO / "contrib").glob("*.conflist")):
        assert net.conflist_from_bytes(path.read_bytes()).plugins, path


def test_a_line_break_in_a_cache_file_never_reaches_the_dry_run_script(tmp_path: Path) -> None:
    """GC takes netns and CNI_ARGS of stale attachments from their cache files: a line break there would end a
    comment line of the --dry-run script and start a command. Refused instead."""
    fake = Fake()
    n = make(tmp_path, lst("tntnet", "one", version="1.1.0"), fake)
    results = tmp_path / "cache" / "results"
    results.mkdir(parents=True)
    for field, value in (("netns", "/x\nrm -rf /"), ("cniArgs", [["A", "1\nrm -rf /"]])):
        write(results, "tntnet-evil-eth0", {"kind": "cniCacheV1", "containerId": "evil", "ifName": "eth0",
                                            "networkName": "tntnet", field: value})
        with pytest.raises(CNIError, match="line break"):
            n.gc(None)
    assert [c[0] for c in fake.calls] == ["GC", "GC"], "no DEL ran for the evil attachment"


def test_a_plugin_bug_in_a_dry_run_is_a_cni_error_not_a_traceback(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from cniplug.plugins import loopback

    def boom(req: Any) -> None:
        raise ValueError("a bug")

    monkeypatch.setitem(loopback.HANDLERS, "ADD", boom)
    conf = tmp_path / "net.d"
    conf.mkdir()
    write(conf, "10.conflist", lst("tntnet", "cniplug-loopback"))
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "cniplug-loopback").write_text("")
    with pytest.raises(CNIError) as err, redirect_stdout(io.StringIO()):
        net.main("add", "tntnet", "/run/netns/tnt-x", True, "en",
                 {"NETCONFPATH": str(conf), "CNI_PATH": str(tmp_path / "bin")})
    assert err.value.msg == 'plugin type="cniplug-loopback" failed (add): CNI error 999: internal error: ValueError'


def test_dry_run_of_a_chained_plugin_after_a_foreign_interface_plugin(tmp_path: Path) -> None:
    """A list that starts with the reference bridge and chains cniplug-portmap: the bridge's result is unknown to a
    dry run, so portmap gets no prevResult. The dry run failed with portmap's "must be called as chained plugin:
    prevResult missing (put cniplug-portmap after cniplug-bridge ...)", wrong for this list. Now the step is shown
    as its exec, commented out, with why its script cannot be shown, and the list's script goes on."""
    conf = tmp_path / "net.d"
    conf.mkdir()
    write(conf, "10.conflist", {"cniVersion": "1.0.0", "name": "tntnet", "plugins": [
        {"type": "bridge", "bridge": "tntbr0", "ipam": {"type": "host-local", "subnet": "10.226.9.0/24"}},
        {"type": "cniplug-portmap", "capabilities": {"portMappings": True}},
        {"type": "cniplug-loopback"}]})
    (tmp_path / "bin").mkdir()
    for kind in ("bridge", "cniplug-portmap", "cniplug-loopback"):
        (tmp_path / "bin" / kind).write_text("")
    env = {"NETCONFPATH": str(conf), "CNI_PATH": str(tmp_path / "bin"),
           "CAP_ARGS": '{"portMappings": [{"hostPort": 18099, "containerPort": 80}]}'}
    out = io.StringIO()
    with redirect_stdout(out):
        assert net.main("add", "tntnet", "/run/netns/tnt-x", True, "en", env) == 0
    text = out.getvalue()
    assert f"{tmp_path}/bin/cniplug-portmap <<'EOF'" in text and '"hostPort": 18099' in text
    assert "prevResult is the result of a plugin that is not ours" in text
    assert "ip -n tnt-x link set lo up" in text, "the steps after it are still shown"
    with redirect_stdout(io.StringIO()) as zh:
        net.main("add", "tntnet", "/run/netns/tnt-x", True, "zh", env)
    assert "不是 cniplug 插件的结果" in zh.getvalue()


def test_json_nested_too_deep_is_a_cni_error_not_a_traceback(tmp_path: Path) -> None:
    """json.loads raises RecursionError, not ValueError, for a document nested deeper than the interpreter's
    recursion limit: `cniplug net` answered a conflist file, CAP_ARGS, a cache file or a plugin's output like that
    with a Python traceback, and a plugin its stdin with "internal error: RecursionError"."""
    from cniplug import skel

    deep = "[" * 100_000
    with pytest.raises(CNIError) as err:
        net.runtime_from_env({"CAP_ARGS": deep}, "/x")
    assert err.value.code == 4 and "CAP_ARGS" in err.value.msg
    conf = tmp_path / "net.d"
    conf.mkdir()
    write(conf, "10.conflist", '{"name": "tntnet", "plugins": ' + deep)
    with pytest.raises(CNIError) as err:
        net.load_conflist(str(conf), "tntnet")
    assert err.value.code == 6 and "10.conflist" in err.value.msg
    results = tmp_path / "results"
    results.mkdir()
    write(results, "tntnet-c1-eth0", deep)
    assert net.cached_attachments(str(tmp_path)) == []
    with pytest.raises(CNIError) as err:
        net.read_cached_result(str(results / "tntnet-c1-eth0"), "1.0.0")
    assert err.value.code == 6
    with pytest.raises(CNIError) as err:
        net.result_from_stdout(deep.encode(), "1.0.0")
    assert err.value.code == 6
    assert net.plugin_error(1, deep.encode(), b"").code == 999
    with pytest.raises(CNIError) as err:
        skel.read_config(deep.encode())
    assert err.value.code == 6
