"""Explanations printed as comments in rendered scripts, in English and Chinese.

Keys are stable ids used by the templates; `{name}` fields are filled from keyword arguments.
The filled-in values are validated interface names, addresses and type names; `say` refuses the rest.
"""

from __future__ import annotations

from cniplug.spec import ERR_INVALID_CONFIG, CNIError

# ASCII control characters, DEL, and the line breaks beyond ASCII that str.splitlines() knows (U+0085,
# U+2028, U+2029): in a comment line any of them could end the comment for some reader.
_UNSAFE = {chr(c) for c in range(0x20)} | {"\x7f", "\x85", "\u2028", "\u2029"}

MESSAGES: dict[str, dict[str, str]] = {
    "loopback_up": {
        "en": "Bring the loopback interface up in the container (tutorial example 1, step 4)",
        "zh": "启用容器内的环回接口（教程示例1，步骤4）",
    },
    "loopback_down": {
        "en": "Take the loopback interface down in the container",
        "zh": "关闭容器内的环回接口",
    },
    "bridge_add": {
        "en": "Create the bridge {name} (tutorial example 2, step 2)",
        "zh": "创建网桥 {name}（教程示例2，步骤2）",
    },
    "bridge_exists": {
        "en": "Bridge {name} already exists: reuse it",
        "zh": "网桥 {name} 已存在：直接使用",
    },
    "veth_add": {
        "en": "Create the veth pair {host} <--> {peer}, peer end directly in the container namespace",
        "zh": "创建veth pair {host} <--> {peer}，对端直接创建在容器命名空间中",
    },
    "veth_attach": {
        "en": "Attach {host} to bridge {bridge} and bring it up (tutorial example 2, step 4)",
        "zh": "把 {host} 接到网桥 {bridge} 上并启用（教程示例2，步骤4）",
    },
    "container_addr": {
        "en": "Configure the container side: addresses, link up, routes (tutorial example 2, step 5)",
        "zh": "配置容器网络：地址、启用接口、路由（教程示例2，步骤5）",
    },
    "gateway_addr": {
        "en": "Give the bridge the gateway address {addr}",
        "zh": "给网桥分配网关地址 {addr}",
    },
    "gateway_present": {
        "en": "Bridge already has gateway address {addr}",
        "zh": "网桥已有网关地址 {addr}",
    },
    "pin_mac": {
        "en": "Pin the MAC of bridge {name} to {mac}, else it follows its ports; last: a set MAC stays set "
              "(addr_assign_type 3), an undo restores only the address",
        "zh": "把网桥 {name} 的MAC固定为 {mac}，否则它随端口变化；放在最后：设置过的MAC一直保持"
              "（addr_assign_type 3），撤销只能恢复地址",
    },
    "accept_ra": {
        "en": "Ignore IPv6 router advertisements on {host}",
        "zh": "在 {host} 上忽略IPv6路由通告",
    },
    "forwarding": {
        "en": "Enable IP forwarding (tutorial example 2, step 6)",
        "zh": "启用IP转发（教程示例2，步骤6）",
    },
    "masq": {
        "en": "NAT to the outside: per-container chain {chain} masquerades traffic leaving the subnet",
        "zh": "NAT访问外网：每个容器一条链 {chain}，对离开子网的流量做MASQUERADE",
    },
    "container_del": {
        "en": "Delete the container interface; its veth peer on the host goes with it",
        "zh": "删除容器接口；主机上的veth对端随之消失",
    },
    "netns_gone": {
        "en": "The container namespace is gone (or not given): nothing to delete inside it",
        "zh": "容器命名空间已不存在（或未提供）：无需在其中删除",
    },
    "masq_del": {"en": "Remove the NAT chain {chain} and the rules jumping to it", "zh": "删除NAT链 {chain} 及跳转到它的规则"},
    "ipam_note": {
        "en": "IPAM ({type}) assigned {addrs}; the reservation is kept by IPAM, not by this script",
        "zh": "IPAM（{type}）分配了 {addrs}；地址预留由IPAM完成，不在本脚本中",
    },
    "ptp_host": {
        "en": "Host side: gateway address on {host} and a host route to each container address",
        "zh": "主机端：在 {host} 上配置网关地址，并为每个容器地址添加主机路由",
    },
    "ptp_container": {
        "en": "Container side: addresses, link up, routes via the gateway on the point-to-point link",
        "zh": "容器端：地址、启用接口、经点对点链路上的网关的路由",
    },
    "ping": {"en": "Check connectivity: ping {addr} from {ns}", "zh": "测试连通性：从 {ns} ping {addr}"},
    "outside": {
        "en": "Namespace {ns} stands in for the outside world (the tutorial pings 8.8.8.8)",
        "zh": "命名空间 {ns} 充当外网（教程中 ping 8.8.8.8）",
    },
    # The tutorial's steps (templates/tutorial/*.sh.j2); zh follows the tutorial's own comments.
    "tut1_s1": {"en": "Step 1: create two network namespaces, one per simulated container",
                "zh": "步骤1：创建网络命名空间，模拟两个隔离的网络环境"},
    "tut1_s2": {"en": "Step 2: create a veth pair; {a} and {b} are connected from birth",
                "zh": "步骤2：创建veth-pair，{a} 和 {b} 自动连接"},
    "tut1_s3": {"en": "Step 3: move each end into its namespace", "zh": "步骤3：将veth分配到命名空间"},
    "tut1_s4": {"en": "Step 4: configure addresses and bring the interfaces up",
                "zh": "步骤4：配置IP地址并启用设备"},
    "tut1_s5": {"en": "Step 5: test connectivity between the namespaces", "zh": "步骤5：测试连通性"},
    "tut2_s1": {"en": "Step 1: create the container network namespace", "zh": "步骤1：创建容器网络命名空间"},
    "tut2_s2": {"en": "Step 2: create the bridge {br}, give it the gateway address, bring it up",
                "zh": "步骤2：创建网桥 {br}，分配网关地址并启用"},
    "tut2_s3": {"en": "Step 3: create the veth pair {a} <--> {b}", "zh": "步骤3：创建veth pair {a} <--> {b}"},
    "tut2_s4": {"en": "Step 4: one end into the container, the other onto the bridge",
                "zh": "步骤4：一端放入容器，另一端连接到网桥"},
    "tut2_s5": {"en": "Step 5: configure the container: address, links up, default route via the bridge",
                "zh": "步骤5：配置容器网络：地址、启用接口、经网桥的默认路由"},
    "tut2_s6": {"en": "Step 6: NAT so the container reaches the outside: forwarding, masquerade, FORWARD rules",
                "zh": "步骤6：配置NAT使容器访问外网：IP转发、MASQUERADE、FORWARD规则"},
    "tut2_s7": {"en": "Step 7: check the connections: the gateway, then the outside",
                "zh": "步骤7：验证连接：先网关，再外网"},
    "tut2_out": {"en": "Stand-in for the outside world: namespace {ns} at {addr}, reached through {dev}",
                 "zh": "外网的替身：命名空间 {ns}，地址 {addr}，经 {dev} 连接"},
    "tut3_s1": {"en": "Step 1: create the router and two client namespaces", "zh": "步骤1：创建路由器和两个客户端命名空间"},
    "tut3_s2": {"en": "Step 2: one veth pair per client, router end and client end",
                "zh": "步骤2：每个客户端一对veth，路由器端和客户端端"},
    "tut3_s3": {"en": "Step 3: move the ends into their namespaces", "zh": "步骤3：分配veth设备"},
    "tut3_s4": {"en": "Step 4: addresses: the router gets .1 on each subnet, clients route via it",
                "zh": "步骤4：配置IP地址：路由器在每个子网取 .1，客户端经它路由"},
    "tut3_s5": {"en": "Step 5: enable forwarding in the router namespace", "zh": "步骤5：启用路由器转发"},
    "tut3_s6": {"en": "Step 6: test client1 <-> client2 through the router", "zh": "步骤6：测试 client1 与 client2 经路由器的连通性"},
}


def say(key: str, lang: str = "en", **fields: object) -> str:
    """Message `key` in `lang` (English if missing) with `fields` filled in, as one `# ...` comment line.

    Raises CNIError 7 naming the field when a value has a control character or line break (_UNSAFE):
    it would end the comment and could start a command.
    """
    entry = MESSAGES[key]
    text = entry.get(lang) or entry["en"]
    for name, value in fields.items():
        if any(c in _UNSAFE for c in str(value)):
            raise CNIError(ERR_INVALID_CONFIG, f"value of {name!r} has a control character or line break: {value!r}")
    return "# " + text.format(**fields)
