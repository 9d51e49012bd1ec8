"""cniplug-bandwidth's config: which limits a config asks for, and which it refuses (code 7 naming field and value).

Each refusal the reference also makes is checked against /usr/lib/cni/bandwidth 1.1.1 itself (it validates
before it needs a namespace, so this runs as any user): it must refuse the same config (with its code 999).
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest

from cniplug.plugins import bandwidth
from cniplug.plugins.bandwidth import Tbf
from cniplug.skel import Request
from cniplug.spec import CNIError

REFERENCE = "/usr/lib/cni/bandwidth"
PREV = {"cniVersion": "1.0.0", "interfaces": [{"name": "tbwveth0"}, {"name": "eth0", "sandbox": "/run/netns/tbw-none"}],
        "ips": []}


def request(**keys: Any) -> Request:
    config = {"cniVersion": "1.0.0", "name": "tbwnet", "type": "cniplug-bandwidth", **keys}
    return Request(command="ADD", config=config, raw_config=json.dumps(config).encode(), container_id="tbwc1",
                   netns="/run/netns/tbw-none", ifname="eth0")


def reference(**keys: Any) -> dict[str, Any]:
    """The reference's answer to ADD with these keys (and a prevResult), as JSON (or {} for no output)."""
    config = {"cniVersion": "1.0.0", "name": "tbwnet", "type": "bandwidth", "prevResult": PREV, **keys}
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "tbwc1", "CNI_NETNS": "/run/netns/tbw-none", "CNI_IFNAME": "eth0",
           "CNI_PATH": "/usr/lib/cni", "PATH": os.environ.get("PATH", "")}
    proc = subprocess.run([REFERENCE], input=json.dumps(config).encode(), env=env, capture_output=True, timeout=30)
    return json.loads(proc.stdout) if proc.stdout.strip() else {}


def test_limits_from_the_top_level_in_bytes() -> None:
    limits = bandwidth.parse_config(request(ingressRate=1_000_000, ingressBurst=100_000, egressRate=2_000_007,
                                            egressBurst=200_001))
    assert limits.ingress == Tbf(rate=125_000, burst=12_500)
    assert limits.egress == Tbf(rate=250_000, burst=25_000)  # /8 rounds down, as the reference
    assert limits.ingress.limit == 125_000 * 25 // 1000 + 12_500


def test_keys_match_ignoring_case_like_go_json() -> None:
    limits = bandwidth.parse_config(request(INGRESSRATE=8_000, ingressburst=16_000))
    assert limits.ingress == Tbf(rate=1_000, burst=2_000) and limits.egress is None


def test_runtime_config_only_without_top_level_keys() -> None:
    """As the reference (observed: a config with any top-level key ignores runtimeConfig.bandwidth)."""
    rc = {"Bandwidth": {"egressRate": 8_000, "egressBurst": 16_000}}
    only_rc = bandwidth.parse_config(request(runtimeConfig=rc))
    assert only_rc.egress == Tbf(rate=1_000, burst=2_000) and only_rc.source == "runtimeConfig.bandwidth."
    both = bandwidth.parse_config(request(runtimeConfig=rc, ingressRate=8_000, ingressBurst=8_000))
    assert both.egress is None and both.ingress == Tbf(rate=1_000, burst=1_000)


def test_nothing_asked_is_empty() -> None:
    assert bandwidth.parse_config(request()).empty
    assert bandwidth.parse_config(request(ingressRate=0, ingressBurst=0, runtimeConfig={"bandwidth": {}})).empty


def test_ifb_name_as_the_reference() -> None:
    # bwp383a8379e150 is what /usr/lib/cni/bandwidth named the ifb for network tbwnet, container tbwc1 (observed).
    assert bandwidth.ifb_name("tbwnet", "tbwc1") == "bwp383a8379e150"
    assert bandwidth.ifb_alias("tbwnet", "tbwc1") == "cniplug-bandwidth:tbwnet:tbwc1"
    assert bandwidth.ifb_alias("n" * 250, "c") == ""


FOUR_GB_BITS = 8 * (2**32 - 1)
# (keys, text the message must have, does the reference refuse it too)
REFUSED = [
    ({"ingressRate": 1_000_000}, "'ingressBurst' is not set", True),
    ({"ingressBurst": 1_000}, "'ingressRate' is not set", True),
    ({"egressRate": 1_000_000}, "'egressBurst' is not set", True),
    ({"egressBurst": 1_000}, "'egressRate' is not set", True),
    ({"ingressRate": 1_000_000, "ingressBurst": FOUR_GB_BITS}, f"'ingressBurst' is {FOUR_GB_BITS}", True),
    ({"egressRate": 1_000_000, "egressBurst": 2**40}, "4GB", True),
    ({"ingressRate": -1, "ingressBurst": 8_000}, "got -1", True),
    ({"ingressRate": 1.5, "ingressBurst": 8_000}, "got 1.5", True),
    ({"ingressRate": "1000", "ingressBurst": 8_000}, "got '1000'", True),
    ({"ingressRate": 2**64, "ingressBurst": 8_000}, f"got {2**64}", True),
    ({"ingressRate": 7, "ingressBurst": 8_000}, "'ingressRate' is 7", True),  # reference: kernel EINVAL
    ({"ingressRate": 2**64 - 1, "ingressBurst": 8_000}, "overflows the tbf limit", True),  # kernel EINVAL
    # Stricter than the reference, which makes a useless bucket.
    ({"ingressRate": 1_000_000, "ingressBurst": 7}, "'ingressBurst' is 7", False),
    ({"ingressRate": True, "ingressBurst": 8_000}, "got True", True),
    ({"ingressRate": 8_000, "INGRESSRATE": 8_000, "ingressBurst": 8_000}, "given twice", False),
]


@pytest.mark.parametrize("keys,text,reference_refuses", REFUSED, ids=[str(k) for k, _, _ in REFUSED])
def test_refused_with_code_7_naming_field_and_value(keys: dict[str, Any], text: str, reference_refuses: bool) -> None:
    with pytest.raises(CNIError) as err:
        bandwidth.parse_config(request(**keys))
    assert err.value.code == 7 and text in err.value.msg + err.value.details, err.value.msg
    assert any(str(v) in err.value.msg for v in keys.values()), err.value.msg
    if reference_refuses and os.path.exists(REFERENCE):
        # Only refusals that need no namespace are compared; the rest the reference reaches later (the kernel).
        answer = reference(**keys)
        assert answer.get("code") == 999 and "interfaces" not in answer, answer


def test_runtime_config_errors_name_the_capability() -> None:
    with pytest.raises(CNIError) as err:
        bandwidth.parse_config(request(runtimeConfig={"bandwidth": {"egressRate": 1_000_000}}))
    assert "runtimeConfig.bandwidth.'egressBurst'" in err.value.msg
    with pytest.raises(CNIError) as err:
        bandwidth.parse_config(request(runtimeConfig={"bandwidth": [1]}))
    assert err.value.code == 7 and "runtimeConfig.bandwidth" in err.value.msg


def test_largest_accepted_values() -> None:
    """The queue limit (rate * 25 ms + burst) and the bucket time (burst/rate < 274 s) both fit 32 bits: a burst
    close to 4 GiB at 128 Mbit/s (268 s of bucket), and a rate of 1.36 Tbit/s with a small burst."""
    big = bandwidth.parse_config(request(ingressRate=8 * 16_000_000, ingressBurst=8 * 4_290_000_000))
    assert big.ingress is not None and big.ingress.limit == 4_290_400_000
    fast = bandwidth.parse_config(request(egressRate=8 * 170_000_000_000, egressBurst=8_000))
    assert fast.egress is not None and fast.egress.limit < 2**32
    huge = bandwidth.parse_config(request(ingressRate=8 * 200_000_000, ingressBurst=8 * 4_290_000_000))
    assert huge.ingress is not None and huge.ingress.limit == 2**32 - 1 and huge.ingress.asked == 8 * 4_290_000_000


# What runtimes send for a pod's bandwidth annotation without a burst: containerd 2^32 - 1 bits, CRI-O 2^35 - 9.
RUNTIME_BURSTS = [2**32 - 1, 2**35 - 9]


@pytest.mark.parametrize("burst", RUNTIME_BURSTS, ids=["containerd", "cri-o"])
@pytest.mark.parametrize("rate", [8, 1_000_000, 100_000_000, 10_000_000_000])
def test_a_burst_the_bucket_cannot_hold_gets_the_largest_one(rate: int, burst: int) -> None:
    """The reference lets burst/rate overflow the bucket's 32-bit tick count (observed: "lat 1.37e+03s"); ours
    takes the largest bucket the kernel holds at that rate, and keeps what was asked for the script."""
    limits = bandwidth.parse_config(request(ingressRate=rate, ingressBurst=burst, egressRate=rate, egressBurst=burst))
    for tbf in (limits.ingress, limits.egress):
        assert tbf is not None and tbf.rate == rate // 8
        ticks = tbf.burst * 1_000_000 / tbf.rate * bandwidth.TICKS_PER_US
        assert ticks < 2**32 and tbf.limit < 2**32, tbf
        if burst // 8 > tbf.burst:
            assert tbf.asked == burst and tbf.burst == bandwidth.largest_burst(tbf.rate)
            # As large as it gets: one more byte would overflow one of the two 32-bit fields.
            more = bandwidth.Tbf(rate=tbf.rate, burst=tbf.burst + 1 + tbf.rate // 1_000_000)
            assert more.burst * 1_000_000 / more.rate * bandwidth.TICKS_PER_US >= 2**32 - 64 or more.limit >= 2**32
        else:
            assert tbf.asked == 0 and tbf.burst == burst // 8


def test_a_capped_burst_is_explained_in_the_script() -> None:
    from cniplug import render

    limits = bandwidth.parse_config(request(ingressRate=1_000_000, ingressBurst=2**32 - 1))
    wanted = (("en", "ingressBurst asks for a burst of 4294967295 bits"), ("zh", "ingressBurst 要求 4294967295"))
    for lang, text in wanted:
        script = render.render("bandwidth/add.sh.j2", lang=lang, assumed=False, veth="tbwveth0", ifname="eth0",
                               ingress=limits.ingress, egress=None, ifb=None, source="")
        assert text in script, script
        assert str(bandwidth.largest_burst(125_000) * 8) in script
        assert f"burst {bandwidth.largest_burst(125_000)} latency 25ms" in script
