"""Property tests: any env + stdin gives a CNI error JSON or a valid script; never a crash, never an unquoted value.

The plugins run in-process with --dry-run and faked facts (tests/golden FakeFacts), so nothing touches the host.
"Crash" includes code 999 'internal error: <exception>' and 'template bug'. A script must parse with
cniplug.script.parse (which refuses shell syntax outside quotes), and every value that came from the input must
appear as one whole argv word.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from golden.test_golden import FakeFacts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cniplug import script, skel
from cniplug.plugins import bridge, loopback, ptp
from cniplug.spec import ERR_INTERNAL, SUPPORTED_VERSIONS, CNIError

SETTINGS = settings(max_examples=700, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DATA_DIR = "/nonexistent/tcr-fuzz-ipam"  # dry-run IPAM only reads the store; it must not exist or be created

HOSTILE = "$`;|&<>(){}[]*?~!#'\"\\ \t\n/:.-_=,%@^"
hostile_text = st.text(alphabet=st.sampled_from(list(HOSTILE) + list("abcXYZ019")), max_size=20)
name_text = st.one_of(st.from_regex(r"\A[a-z][a-z0-9_.\-]{0,14}\Z"), hostile_text)
any_json: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | hostile_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(hostile_text, inner, max_size=3),
    max_leaves=6,
)
subnets4 = st.sampled_from(["10.250.140.0/24", "10.250.141.0/26", "10.250.142.128/25", "10.250.143.0/30"])
subnets6 = st.sampled_from(["fd10:250:140::/64", "fd10:250:140:1::/120"])
subnet = st.one_of(subnets4, subnets6, hostile_text, any_json)
mac = st.one_of(st.just(""), st.from_regex(r"\A[0-9a-f]{2}(:[0-9a-f]{2}){5}\Z"), hostile_text)


@pytest.fixture(scope="module", autouse=True)
def fake_facts() -> Iterator[None]:
    mp = pytest.MonkeyPatch()
    FakeFacts({"links": {"tcrbr1": {"kind": "bridge", "flags": "0x1003", "addrs": ["10.250.140.1/24"]}}}).install(mp)
    yield
    mp.undo()


ADD_ONLY = st.just("ADD")


def env_strategy(command: st.SearchStrategy[str] = ADD_ONLY) -> st.SearchStrategy[dict[str, str]]:
    return st.fixed_dictionaries({
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": name_text,
        "CNI_NETNS": st.one_of(st.just("/run/netns/tcrfz"), st.builds(lambda t: "/run/netns/" + t, hostile_text),
                               st.builds(lambda t: "/proc/1/" + t, hostile_text), hostile_text),
        "CNI_IFNAME": st.one_of(st.just("eth0"), name_text),
        "CNI_PATH": st.just("/opt/cni/bin"),
        "CNI_ARGS": st.one_of(st.just(""), hostile_text, st.builds(lambda m: "MAC=" + m, mac)),
    })


def ipam_strategy() -> st.SearchStrategy[Any]:
    ranges = st.lists(st.lists(st.fixed_dictionaries({"subnet": subnet}, optional={
        "rangeStart": st.one_of(hostile_text, st.just("10.250.140.10")),
        "gateway": st.one_of(hostile_text, st.just("10.250.140.1"))}), min_size=1, max_size=2), max_size=2)
    return st.one_of(
        st.fixed_dictionaries({"type": st.just("cniplug-host-local"), "dataDir": st.just(DATA_DIR), "ranges": ranges},
                              optional={"routes": st.lists(st.fixed_dictionaries(
                                  {"dst": st.one_of(st.just("0.0.0.0/0"), hostile_text)},
                                  optional={"gw": hostile_text}), max_size=2)}),
        st.fixed_dictionaries({"type": st.just("cniplug-static"), "addresses": st.lists(
            st.fixed_dictionaries({"address": st.one_of(st.just("10.250.140.7/24"), hostile_text)},
                                  optional={"gateway": hostile_text}), max_size=2)}),
        any_json,
    )


def config_strategy(plugin: str) -> st.SearchStrategy[dict[str, Any]]:
    base = {"cniVersion": st.one_of(st.sampled_from(SUPPORTED_VERSIONS), any_json), "name": name_text,
            "type": st.just(plugin)}
    optional: dict[str, st.SearchStrategy[Any]] = {"ipMasq": st.one_of(st.booleans(), any_json),
                                                   "mtu": st.one_of(st.integers(0, 70000), any_json),
                                                   "runtimeConfig": st.one_of(st.fixed_dictionaries({"mac": mac}),
                                                                              any_json)}
    if plugin == "cniplug-bridge":
        optional.update(bridge=st.one_of(st.just("tcrbr1"), name_text, any_json),
                        isGateway=st.booleans(), isDefaultGateway=st.booleans(), hairpinMode=st.booleans(),
                        promiscMode=st.booleans(), vlan=st.one_of(st.integers(-2, 5000), any_json),
                        forceAddress=st.booleans())
    if plugin != "cniplug-loopback":
        base["ipam"] = ipam_strategy()
    return st.fixed_dictionaries(base, optional=optional)


def run_dry(handlers: dict[str, Any], env: dict[str, str], stdin: bytes) -> tuple[int, str]:
    out = io.StringIO()
    rc = skel.run(handlers, "fuzz", argv=["--dry-run"], environ=env, stdin=io.BytesIO(stdin), stdout=out)
    return rc, out.getvalue()


def check_outcome(rc: int, out: str) -> list[list[str]] | None:
    """The argv words of every step and undo line, or None for a (non-crash) CNI error."""
    if rc != 0:
        body = json.loads(out)
        assert isinstance(body.get("code"), int), out
        # A crash: the catch-all for an unexpected exception, or a script the parser refuses (a template bug).
        # A deliberate 999 with its own message (e.g. "IPAM returned no IP addresses") is an answer, as in Go.
        assert not (body["code"] == ERR_INTERNAL and body["msg"].startswith(("internal error", "template bug"))), \
            f"crash: {out}"
        assert "Traceback" not in out
        return None
    assert out.startswith(script.HEADER), out
    try:
        parsed = script.parse(out[len(script.HEADER):])
    except CNIError as err:
        raise AssertionError(f"script does not parse: {err.msg}\n{out}") from None
    return [s.argv for s in parsed.steps] + [u for s in parsed.steps for u in s.undo]


def assert_whole_words(lines: list[list[str]], env: dict[str, str], config: dict[str, Any], plugin: str) -> None:
    words = {w for argv in lines for w in argv}
    netns = env["CNI_NETNS"]
    if plugin != "cniplug-loopback":
        assert env["CNI_IFNAME"] in words, (env["CNI_IFNAME"], lines)
        assert {f"--net={netns}", netns} & words, (netns, lines)  # `netns PATH` / `nsenter --net=PATH`
    if plugin == "cniplug-bridge":
        assert config.get("bridge", "cni0") in words
    if plugin == "cniplug-loopback":
        named = netns.removeprefix("/run/netns/")
        assert {f"--net={netns}", named} & words, (netns, lines)
    mac = (config.get("runtimeConfig") or {}).get("mac") if isinstance(config.get("runtimeConfig"), dict) else None
    if mac and plugin != "cniplug-loopback":
        assert mac.lower() in words
    if config.get("ipMasq") is True and any("-N" in argv for argv in lines):
        comment = f'name: "{config["name"]}" id: "{env["CNI_CONTAINERID"]}"'
        assert comment in words, (comment, lines)


@SETTINGS
@given(env=env_strategy(st.one_of(st.sampled_from(skel.VERBS), hostile_text)),
       stdin=st.one_of(st.binary(max_size=200), any_json.map(lambda v: json.dumps(v).encode()),
                       config_strategy("cniplug-bridge").map(lambda v: json.dumps(v).encode())))
def test_parse_request_is_a_request_or_a_cni_error(env: dict[str, str], stdin: bytes) -> None:
    try:
        req = skel.parse_request(env, stdin, dry_run=True)
    except CNIError as err:
        assert not (err.code == ERR_INTERNAL and err.msg.startswith("internal error")), err.msg
        assert json.loads(err.to_json("1.0.0"))["code"] == err.code
        return
    assert req.command in skel.VERBS


@SETTINGS
@given(env=env_strategy(), config=config_strategy("cniplug-bridge"))
def test_bridge_dry_run_is_an_error_or_a_quoted_script(env: dict[str, str], config: dict[str, Any]) -> None:
    rc, out = run_dry(bridge.HANDLERS, env, json.dumps(config).encode())
    lines = check_outcome(rc, out)
    if lines is not None:
        assert_whole_words(lines, env, config, "cniplug-bridge")


@SETTINGS
@given(plugin=st.sampled_from(["cniplug-ptp", "cniplug-loopback"]), data=st.data(),
       env=env_strategy(st.sampled_from(["ADD", "DEL"])))
def test_ptp_and_loopback_dry_run_is_an_error_or_a_quoted_script(plugin: str, data: st.DataObject,
                                                                 env: dict[str, str]) -> None:
    config = data.draw(config_strategy(plugin))
    handlers = ptp.HANDLERS if plugin == "cniplug-ptp" else loopback.HANDLERS
    rc, out = run_dry(handlers, env, json.dumps(config).encode())
    lines = check_outcome(rc, out)
    if lines is not None and env["CNI_COMMAND"] == "ADD":
        assert_whole_words(lines, env, config, plugin)
