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
    # Line by line explanations of the plugin scripts (what the tutorial does not have, and why).
    "bridge_mac": {"en": "The bridge's MAC is fixed at creation ({mac}): without it a bridge takes the lowest MAC of its ports, and the gateway's MAC would change whenever a container comes or goes (stale ARP caches)",
                   "zh": "创建时就固定网桥的MAC（{mac}）：否则网桥会取其端口中最小的MAC，每当容器增减网关的MAC都会变（各处ARP缓存随之失效）"},
    "bridge_mtu": {"en": "mtu {mtu}: every link of the network gets the configured MTU (the tutorial keeps the default 1500)",
                   "zh": "mtu {mtu}：网络中的每条链路都使用配置的MTU（教程中是默认值1500）"},
    "bridge_promisc": {"en": "promiscMode: the bridge's own interface accepts frames for any MAC, so the host sees all the network's traffic",
                       "zh": "promiscMode：网桥自身的接口接收任何MAC的帧，主机可以看到网络中的全部流量"},
    "veth_why": {"en": "Unlike the tutorial (example {ex}, step {made}, then step {moved} moves it), the container end is created inside the container namespace: its name {peer} would clash with the host's own {peer}, and moving a device costs 15-50 ms; `address` gives it a fixed MAC",
                 "zh": "与教程不同（示例{ex}步骤{made}创建、步骤{moved}再移入），容器端直接在容器命名空间中创建：它的名字 {peer} 会与主机自己的 {peer} 冲突，而且移动设备要花15-50毫秒；`address` 给它固定的MAC"},
    "veth_up": {"en": "Bring the host end up (tutorial example 2, step 4: `ip link set veth-host up`)",
                "zh": "启用主机端（教程示例2，步骤4：`ip link set veth-host up`）"},
    "hairpin": {"en": "hairpinMode: the bridge may send a frame back out of the port it came in on, so a container can reach itself through an address that leads back to it (a service's DNAT)",
                "zh": "hairpinMode：网桥可以把帧从它进入的端口再发回去，容器经过指回自己的地址（如服务的DNAT）也能访问到自己"},
    "vlan": {"en": "VLAN {vlan}: the port carries VLAN {vlan} untagged (its PVID): containers of other VLANs on this bridge cannot see it",
             "zh": "VLAN {vlan}：端口以不打标签的方式承载VLAN {vlan}（它的PVID）：网桥上其他VLAN的容器看不到它"},
    "accept_ra_why": {"en": "accept_ra=0 on {names}: the host must not take addresses or a default route from IPv6 router advertisements a container sends",
                      "zh": "在 {names} 上设置 accept_ra=0：主机不能从容器发出的IPv6路由通告中获取地址或默认路由"},
    "container_sysctls": {"en": "In the container: arp_notify=1 announces the address with a gratuitous ARP when the link comes up (neighbours update at once); IPv6 on, and accept_dad=0 skips duplicate address detection (IPAM made the address unique; DAD would hold it back 1-2 s)",
                          "zh": "在容器中：arp_notify=1 在链路启用时用免费ARP通告地址（邻居立即更新）；启用IPv6，accept_dad=0 跳过重复地址检测（地址已由IPAM保证唯一，DAD会让它晚1-2秒可用）"},
    "container_addr_one": {"en": "The container's address from IPAM (tutorial example {ex}, step {step}: `ip addr add`); `broadcast +` derives the broadcast address from the prefix",
                           "zh": "IPAM分配的容器地址（教程示例{ex}，步骤{step}：`ip addr add`）；`broadcast +` 按前缀计算广播地址"},
    "container_addr_v6": {"en": "The container's IPv6 address from IPAM (tutorial example {ex}, step {step} does the same for IPv4)",
                          "zh": "IPAM分配的容器IPv6地址（教程示例{ex}，步骤{step}对IPv4做同样的事）"},
    "container_up": {"en": "Bring the container's interface up (tutorial example {ex}, step {step})",
                     "zh": "启用容器的接口（教程示例{ex}，步骤{step}）"},
    "container_route": {"en": "Route {dst} via the gateway, from the config (tutorial example {ex}, step {step}: `ip route add default via ...`)",
                        "zh": "经网关到 {dst} 的路由，来自配置（教程示例{ex}，步骤{step}：`ip route add default via ...`）"},
    "bridge_up": {"en": "Bring the bridge up (tutorial example 2, step 2: `ip link set br0 up`); after the container's side, as the reference does",
                  "zh": "启用网桥（教程示例2，步骤2：`ip link set br0 up`）；与参考插件一样放在容器端配置之后"},
    "gateway_why": {"en": "The gateway is the bridge's own address (tutorial example 2, step 2: `ip addr add 10.1.1.1/24 dev br0`): containers send everything else to it",
                    "zh": "网关就是网桥自己的地址（教程示例2，步骤2：`ip addr add 10.1.1.1/24 dev br0`）：容器把其余流量都发给它"},
    "gateway_replace": {"en": "forceAddress: remove the bridge's old address {addr} of the same family",
                        "zh": "forceAddress：删除网桥上同一地址族的旧地址 {addr}"},
    "forwarding_ex": {"en": "Enable IP forwarding, so the host routes between the containers and the outside (tutorial example {ex}, step {step}); never switched off again, as the reference does: other networks may need it",
                      "zh": "启用IP转发，让主机在容器与外部之间转发（教程示例{ex}，步骤{step}）；与参考插件一样不再关闭：其他网络可能也需要它"},
    "masq_chain": {"en": "A chain of its own for this container, named from a hash of network and container id (the reference's names, so either plugin finds it); -w waits for the xtables lock instead of failing while another program holds it",
                   "zh": "为这个容器建一条自己的链，名字来自网络名和容器ID的哈希（与参考插件相同，两者都能找到它）；-w 在其他程序持有xtables锁时等待而不是失败"},
    "masq_accept": {"en": "Traffic to the container's own subnet {subnet} leaves unchanged: ACCEPT ends the chain, so containers see each other's real addresses",
                    "zh": "发往容器自身子网 {subnet} 的流量不做修改：ACCEPT 结束这条链，容器之间看到的是彼此的真实地址"},
    "masq_masq": {"en": "Everything else gets the host's address as its source (tutorial example 2, step 6: `-j MASQUERADE`), except multicast ({multicast}), which never leaves the link",
                  "zh": "其余流量的源地址换成主机地址（教程示例2，步骤6：`-j MASQUERADE`），组播（{multicast}）除外，它不会离开本链路"},
    "masq_jump": {"en": "Send this container's packets (source {source}) through the chain; added last, so the chain is complete when the first packet arrives",
                  "zh": "把这个容器的数据包（源地址 {source}）送进这条链；最后添加，保证第一个包到来时链已完整"},
    "ptp_veth": {"en": "Create the veth pair {host} <--> {peer}: the link between the host, which acts as the router, and the container (tutorial example 3, step 2)",
                 "zh": "创建veth pair {host} <--> {peer}：主机（充当路由器）与容器之间的链路（教程示例3，步骤2）"},
    "ptp_host_up": {"en": "Bring the host end up (tutorial example 3, step 4: the router brings its ends up)",
                    "zh": "启用主机端（教程示例3，步骤4：路由器启用它的各个接口）"},
    "ptp_gw": {"en": "The gateway address on the host end, as a single address ({cidr}): a point-to-point link needs no subnet, and the same gateway address sits on every container's host end (example 3 gives the router one address per link)",
               "zh": "主机端的网关地址只是一个地址（{cidr}）：点对点链路不需要子网，每个容器的主机端都使用同一个网关地址（示例3中路由器每条链路一个地址）"},
    "ptp_host_route": {"en": "How the host reaches the container: a route to exactly its address ({dst}) through this veth; scope host, as the reference sets it (example 3's router learns its clients' subnets from its addresses instead)",
                       "zh": "主机如何到达容器：经这条veth到容器这一个地址（{dst}）的路由；scope host 与参考插件一致（示例3中路由器则通过自己的地址得知客户端子网）"},
    "ptp_p2p_del": {"en": "Point-to-point in the container, 1 of 3: drop the kernel's on-link route to the whole subnet {net} (no neighbour is on this link but the host)",
                    "zh": "在容器中做成点对点，第1步（共3步）：删除内核到整个子网 {net} 的直连路由（这条链路上除了主机没有别的邻居）"},
    "ptp_p2p_gw": {"en": "2 of 3: the gateway {gw} is reached directly on the link (scope link)",
                   "zh": "第2步：网关 {gw} 在链路上直接可达（scope link）"},
    "ptp_p2p_net": {"en": "3 of 3: the rest of {net} goes via the gateway too, so even neighbours in the subnet are reached through the host (the router of example 3)",
                    "zh": "第3步：{net} 的其余地址也经网关，所以连同一子网的邻居也经主机（示例3中的路由器）到达"},
    "nodad": {"en": "nodad: a two-ended link has no duplicate to detect, so the address is usable at once",
              "zh": "nodad：两端的链路上不会有重复地址，无需检测，地址立即可用"},
    "container_del_why": {"en": "Delete the container interface {ifname}; its veth peer on the host, the host routes and addresses on it go with it (`|| true`: DEL never fails because something is already gone)",
                          "zh": "删除容器接口 {ifname}；它在主机上的veth对端以及其上的路由和地址随之消失（`|| true`：DEL不会因为东西已经不在而失败）"},
    "masq_del_jump": {"en": "Stop sending the container's packets to the chain (`|| true`: already gone is fine)",
                      "zh": "不再把容器的数据包送进这条链（`|| true`：已不存在也没关系）"},
    "masq_del_flush": {"en": "Empty the chain {chain}", "zh": "清空链 {chain}"},
    "masq_del_chain": {"en": "Delete the chain {chain}", "zh": "删除链 {chain}"},
    "vlan_filtering": {"en": "vlan_filtering 1: the bridge keeps the VLANs of its ports apart", "zh": "vlan_filtering 1：网桥按VLAN隔离它的各个端口"},
    "vlan_del": {"en": "The port leaves the default VLAN 1", "zh": "端口离开默认的VLAN 1"},
    "loopback_why": {"en": "Bring lo up in the container (tutorial example 1, step 4: `ip link set lo up`): without it even 127.0.0.1 is unreachable inside",
                     "zh": "在容器中启用lo（教程示例1，步骤4：`ip link set lo up`）：否则容器内连127.0.0.1都不通"},
    # The IPAM plugins' --dry-run (cniplug/ipam/host_local.py, cniplug/plugins/static.py).
    "hl_head": {"en": "cniplug-host-local {verb} for network {net}{who}",
                "zh": "cniplug-host-local {verb}，网络 {net}{who}"},
    "hl_who": {"en": ", container {cid}, interface {ifname}", "zh": "，容器 {cid}，接口 {ifname}"},
    "hl_store": {"en": "Store {dir}: the reference host-local layout, one file per reserved IP holding '<containerID>\\r\\n<ifname>', last_reserved_ip.<N> per range set, and a lock file",
                 "zh": "存储目录 {dir}：与参考 host-local 相同的布局，每个已预留的IP一个文件，内容为 '<容器ID>\\r\\n<接口名>'，每个地址段一个 last_reserved_ip.<N>，以及一个锁文件"},
    "hl_same": {"en": "This script makes the same change the plugin would make; nothing was written while printing it.",
                "zh": "这个脚本做的改动与插件相同；打印它时没有写入任何东西。"},
    "hl_lock": {"en": "Hold an exclusive flock on the store's lock file (the same lock the reference plugin takes).",
                "zh": "对存储目录的锁文件加排他 flock（与参考插件使用同一把锁）。"},
    "hl_mkdir": {"en": "Store directory, mode 0755 like the reference.", "zh": "存储目录，权限 0755，与参考插件相同。"},
    "hl_noclobber": {"en": "noclobber: '>' refuses an existing file, i.e. O_CREAT|O_EXCL - the reservation is atomic.",
                     "zh": "noclobber：'>' 拒绝覆盖已存在的文件，相当于 O_CREAT|O_EXCL——预留是原子的。"},
    "hl_reserve": {"en": "Range set {set} ({rs}): reserve {ip} -> {addr}, gateway {gw}",
                   "zh": "地址段 {set}（{rs}）：预留 {ip} -> {addr}，网关 {gw}"},
    "hl_cursor": {"en": "Round-robin cursor of range set {set}: the next ADD starts after {ip}.",
                  "zh": "地址段 {set} 的轮转游标：下一次 ADD 从 {ip} 之后开始。"},
    "hl_result": {"en": "Result: {json}", "zh": "结果：{json}"},
    "hl_no_store": {"en": "{dir} does not exist: nothing to release.", "zh": "{dir} 不存在：无需释放。"},
    "hl_nothing": {"en": "Nothing to release: {why}.", "zh": "无需释放：{why}。"},
    "hl_release": {"en": "Release {why}.", "zh": "释放{why}。"},
    "hl_why_del": {"en": "the addresses reserved by this container and interface", "zh": "这个容器和接口预留的地址"},
    "hl_why_gc": {"en": "reservations of attachments that are no longer valid", "zh": "已不再有效的连接所占的预留"},
    "hl_no_gc_key": {"en": "No cni.dev/valid-attachments key: GC frees nothing.", "zh": "没有 cni.dev/valid-attachments 键：GC 不释放任何地址。"},
    "hl_read_only": {"en": "{verb} only reads the store: nothing to change.", "zh": "{verb} 只读取存储：没有要改动的。"},
    "nothing_to_run": {"en": "{verb} changes nothing on the host: there is no command to run.",
                       "zh": "{verb} 不会改动主机：没有要运行的命令。"},
    "static_add": {"en": "cniplug-static: no state to change; ADD answers with {addrs}", "zh": "cniplug-static：没有要改动的状态；ADD 直接答复 {addrs}"},
    # cniplug demo's section titles (cniplug/lab/demo.py).
    "demo_env": {"en": "what the runtime hands cniplug-bridge: the environment", "zh": "运行时交给 cniplug-bridge 的环境变量"},
    "demo_stdin": {"en": "... and the network configuration on stdin", "zh": "……以及标准输入上的网络配置"},
    "demo_ran": {"en": "the script cniplug-bridge ran (from its logFile: the names and MACs it really made)", "zh": "cniplug-bridge 实际运行的脚本（来自它的 logFile：真实创建的名字和MAC）"},
    "demo_result": {"en": "ADD result: what the runtime gets back", "zh": "ADD 的结果：运行时拿到的返回值"},
    "demo_loopback": {"en": "cniplug-loopback ADD: a runtime chains it so that lo is up inside", "zh": "cniplug-loopback ADD：运行时把它串在链中，让容器内的 lo 启用"},
    "demo_host": {"en": "the host side", "zh": "主机这一侧"},
    "demo_ping": {"en": "ping the gateway from the container", "zh": "从容器 ping 网关"},
    "demo_nat": {"en": "a TCP connection from the container to the outside stand-in {out}", "zh": "从容器到外网替身 {out} 的TCP连接"},
    "demo_nat_seen": {"en": "the container connected from {src}; the outside saw {seen}: {why}", "zh": "容器从 {src} 发起连接；外网看到的是 {seen}：{why}"},
    "demo_masq": {"en": "MASQUERADE rewrote the source to the host's address", "zh": "MASQUERADE 把源地址改成了主机地址"},
    "demo_nomasq": {"en": "NOT masqueraded", "zh": "没有做地址伪装"},
    "demo_topology": {"en": "the topology (cniplug show)", "zh": "拓扑（cniplug show）"},
    "demo_check": {"en": "CHECK with prevResult = the ADD result", "zh": "CHECK，prevResult 为 ADD 的结果"},
    "demo_del": {"en": "DEL, then the demo removes what it made", "zh": "DEL，然后 demo 删除它创建的一切"},
    # cniplug show's labels (cniplug/lab/show.py).
    "show_host": {"en": "host", "zh": "主机"},
    "show_netns": {"en": "namespace", "zh": "命名空间"},
    "show_routes": {"en": "routes", "zh": "路由"},
    "show_pairs": {"en": "veth pairs", "zh": "veth pair"},
    "show_ports": {"en": "bridge ports", "zh": "网桥端口"},
    "show_nat": {"en": "NAT chains (iptables -t nat POSTROUTING)", "zh": "NAT 链（iptables -t nat POSTROUTING）"},
    "show_ipam": {"en": "IPAM reservations in {dir}", "zh": "IPAM 地址预留（{dir}）"},
    "show_peer": {"en": "peer", "zh": "对端"},
    "show_master": {"en": "master", "zh": "网桥"},
    "show_net": {"en": "net", "zh": "网络"},
    "show_container": {"en": "container", "zh": "容器"},
    "show_none": {"en": "(none)", "zh": "（无）"},
    "show_title": {"en": "cniplug show: network topology", "zh": "cniplug show：网络拓扑"},
    # The lab (cniplug/lab/tutorial.py): what a ping's TTL says, why a ping fails under --break.
    "ttl_direct": {"en": "TTL {ttl}: Linux sends 64 and nothing took one off, so the reply came straight from the other end.",
                   "zh": "TTL {ttl}：Linux 发出的 TTL 是 64，没有减少，说明应答直接来自对端，中间没有路由器。"},
    "ttl_routed": {"en": "TTL {ttl}: 64 minus {hops}: the reply crossed {hops} router(s), each takes one off.",
                   "zh": "TTL {ttl}：从 64 减少了 {hops}，说明应答途经 {hops} 个路由器（每经过一个路由器减 1）。"},
    "break_forwarding": {"en": "without net.ipv4.ip_forward=1 the router (the host in example 2) drops packets that are not addressed to itself instead of passing them from one interface to the other",
                         "zh": "没有 net.ipv4.ip_forward=1，路由器（示例2中是主机）会丢弃不是发给自己的数据包，而不是把它们从一个接口转到另一个接口"},
    "break_masquerade": {"en": "without MASQUERADE the outside sees the container's private source address and has no route back to it, so the reply never comes",
                         "zh": "没有 MASQUERADE，外网看到的是容器的私有源地址，没有回到它的路由，所以应答永远回不来"},
    "break_route": {"en": "without a default route the container (client) knows only its own subnet: packets to any other address have nowhere to go ('Network is unreachable')",
                    "zh": "没有默认路由，容器（客户端）只知道自己的子网：发往其他地址的数据包无处可去（'Network is unreachable'）"},
    "break_gateway": {"en": "without an address on the bridge nothing answers at the gateway address: the container's default route points at nobody",
                      "zh": "网桥上没有地址，网关地址处就没有人应答：容器的默认路由指向了不存在的主机"},
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
    "tut3_s1": {"en": "Step 1: create the router and two client namespaces", "zh": "步骤1：创建路由器和两个客户端命名空间"},
    "tut3_s2": {"en": "Step 2: one veth pair per client, router end and client end",
                "zh": "步骤2：每个客户端一对veth，路由器端和客户端端"},
    "tut3_s3": {"en": "Step 3: move the ends into their namespaces", "zh": "步骤3：分配veth设备"},
    "tut3_s4": {"en": "Step 4: addresses: the router gets .1 on each subnet, clients route via it",
                "zh": "步骤4：配置IP地址：路由器在每个子网取 .1，客户端经它路由"},
    "tut3_s5": {"en": "Step 5: enable forwarding in the router namespace", "zh": "步骤5：启用路由器转发"},
    "tut3_s6": {"en": "Step 6: test client1 <-> client2 through the router", "zh": "步骤6：测试 client1 与 client2 经路由器的连通性"},
    "tut_header": {
        "en": "The tutorial's example {n}: its commands as written (its echo lines become these comments),\n# rendered by cniplug from the macros its plugins use. Like the tutorial's scripts it has no `set -e`.\n# An `#undo` line says how `cniplug tutorial {n} --run` takes the step above it back (with this\n# host's values at printing time); bash reads it as a comment.",
        "zh": "教程示例{n}：命令与教程原文一致（教程中的 echo 说明改为这些注释），由cniplug用其插件所用的同一组宏生成。\n# 与教程脚本一样没有 `set -e`。`#undo` 行说明 `cniplug tutorial {n} --run` 如何撤销上一步（取值来自打印时的本机）；\n# bash把它当作注释。",
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


def text(key: str, lang: str = "en", **fields: object) -> str:
    """Message `key` in `lang` (English if missing) with `fields` filled in.

    Raises CNIError 7 naming the field when a value has a control character or line break (_UNSAFE):
    in a script it would end the comment and could start a command.
    """
    entry = MESSAGES[key]
    template = entry.get(lang) or entry["en"]
    for name, value in fields.items():
        if any(c in _UNSAFE for c in str(value)):
            raise CNIError(ERR_INVALID_CONFIG, f"value of {name!r} has a control character or line break: {value!r}")
    return template.format(**fields)


def say(key: str, lang: str = "en", **fields: object) -> str:
    """text() as one `# ...` comment line of a script."""
    return "# " + text(key, lang, **fields)
