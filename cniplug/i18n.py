"""Explanations printed as comments in rendered scripts, in English and Chinese.

Keys are stable ids used by the templates; `{name}` fields are filled from keyword arguments.
The filled-in values are validated interface names and addresses, never free text from a config.
"""

from __future__ import annotations

import re

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
    "tut_header": {
        "en": "The tutorial's example {n}, as written, rendered by cniplug from the macros its plugins use.\n# Like the tutorial's scripts it has no `set -e`. An `#undo` line says how `cniplug tutorial {n} --run`\n# takes the step above it back; bash reads it as a comment.",
        "zh": "教程示例{n}，与教程原文一致，由cniplug用其插件所用的同一组宏生成。\n# 与教程脚本一样没有 `set -e`。`#undo` 行说明 `cniplug tutorial {n} --run` 如何撤销上一步；bash把它当作注释。",
    },
    "tut_lab_header": {
        "en": "The tutorial's example {n} as `cniplug tutorial {n} --run` runs it: names prefixed with {prefix}, stand-ins announced below.",
        "zh": "`cniplug tutorial {n} --run` 实际运行的教程示例{n}：名称加前缀 {prefix}，替身在下文说明。",
    },
    "tut_clean": {"en": "Clean up what an earlier run may have left (safe: errors are hidden)",
                  "zh": "清理可能存在的旧配置（安全操作）"},
    "tut1_s6": {"en": "Step 6: show the devices in detail: `{a}@ifN` names the peer's interface index, `link-netns` its namespace",
                "zh": "步骤6：查看设备详细信息：`{a}@ifN` 给出对端的接口索引，`link-netns` 给出它所在的命名空间"},
    "tut_ethtool": {"en": "ethtool is often not installed; `ip -d link show` shows the same peer index (`@ifN`) and its namespace",
                    "zh": "ethtool 常常没有安装；`ip -d link show` 同样显示对端索引（`@ifN`）和它所在的命名空间"},
    "tut2_s8": {"en": "Step 8: show the final configuration", "zh": "步骤8：显示最终配置"},
    "tut_topology": {"en": "The topology now:", "zh": "当前网络拓扑:"},
    "tut_brctl": {"en": "brctl (bridge-utils) is gone from current distributions; `ip link show master` lists the same ports",
                  "zh": "当前发行版已不再默认提供 brctl（bridge-utils）；`ip link show master` 列出同样的端口"},
    "tut_route": {"en": "route (net-tools) is gone from current distributions; `ip route` shows the same table",
                  "zh": "当前发行版已不再默认提供 route（net-tools）；`ip route` 显示同样的路由表"},
    "tut3_s7": {"en": "Step 7: show the topology, the router's routing table and client1's neighbour (ARP) table",
                "zh": "步骤7：显示网络拓扑、路由器的路由表和 client1 的邻居（ARP）表"},
    "tut2_lab_out": {"en": "--run stand-in: this machine may have no uplink and no Internet, so {dev} plays the tutorial's eth0 and namespace {ns} at {addr} plays 8.8.8.8",
                     "zh": "--run 的替身：本机可能没有上行网卡也不能上网，所以由 {dev} 扮演教程中的 eth0，由命名空间 {ns}（{addr}）扮演 8.8.8.8"},
    "tut_lab_wait": {"en": "--run adds -w to iptables: wait for the xtables lock instead of failing while another program holds it",
                     "zh": "--run 给 iptables 加上 -w：另一个程序持有 xtables 锁时等待，而不是直接失败"},
}


def say(key: str, lang: str = "en", **fields: object) -> str:
    entry = MESSAGES[key]
    text = entry.get(lang) or entry["en"]
    # A newline in a field would end the comment and start a command: flatten control characters.
    safe = {k: re.sub(r"[\x00-\x1f]", "?", str(v)) for k, v in fields.items()}
    return "# " + text.format(**safe)
