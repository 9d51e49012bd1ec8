#!/bin/bash
# cniplug net ADD：网络 gold（@TMP@/net.d/10-gold.conflist），共 3 个插件，按列表顺序，与 libcni 的执行方式相同；容器 cnitool-277d583275450b09c54c，命名空间 /run/netns/golden，接口 eth0
# 每个 cniplug 插件自己的 --dry-run 脚本在子 shell ( ... ) 中运行，其设置不会外泄；set -e 在第一个失败处停止，与 libcni 在第一个失败的插件处停止一样
set -e

# 第 1 步：ADD cniplug-bridge（@TMP@/bin/cniplug-bridge），cniplug 插件：它自己的 --dry-run 脚本，使用 libcni 会传给它的标准输入和 CNI_* 变量
# IPAM cniplug-host-local（ipam.type）：它对磁盘存储的改动（插件在 Python 中完成）
(
set -e
# cniplug-host-local ADD，网络 gold，容器 cnitool-277d583275450b09c54c，接口 eth0
# 存储目录 /nonexistent/cniplug-golden/gold：与参考 host-local 相同的布局，每个已预留的IP一个文件，内容为 '<容器ID>\r\n<接口名>'，每个地址段一个 last_reserved_ip.<N>，以及一个锁文件
# 这个脚本做的改动与插件相同；打印它时没有写入任何东西。
umask 022
# 存储目录，权限 0755，与参考插件相同。
mkdir -p -m 0755 /nonexistent/cniplug-golden/gold
# 对存储目录的锁文件加排他 flock（与参考插件使用同一把锁）。
exec 9>/nonexistent/cniplug-golden/gold/lock
flock 9
# noclobber：'>' 拒绝覆盖已存在的文件，相当于 O_CREAT|O_EXCL——预留是原子的。
set -o noclobber
# 地址段 0（10.22.0.1-10.22.0.254）：预留 10.22.0.2 -> 10.22.0.2/24，网关 10.22.0.1
printf '%s\r\n%s' cnitool-277d583275450b09c54c eth0 > /nonexistent/cniplug-golden/gold/10.22.0.2
# 地址段 0 的轮转游标：下一次 ADD 从 10.22.0.2 之后开始。
printf '%s' 10.22.0.2 >| /nonexistent/cniplug-golden/gold/last_reserved_ip.0
# 结果：{"cniVersion": "1.1.0", "ips": [{"address": "10.22.0.2/24", "gateway": "10.22.0.1"}], "routes": []}
)
# cniplug-bridge：它运行的命令
(
# 由 cniplug 生成：插件按此顺序运行的命令。同一命名空间中连续的 `ip` 行作为一次 `ip -batch -` 发送，
# 同一张表的 iptables 行作为一次 `iptables-restore --noflush` 发送：进程更少，效果相同。
# `#undo` 行说明后面的步骤失败时插件如何撤销它上面的那一步；bash 把它当作注释。
set -e
# IPAM（cniplug-host-local）分配了 10.22.0.2/24；地址预留由IPAM完成，不在本脚本中
# 创建网桥 cni0（教程示例2，步骤2）
# 创建时就固定网桥的MAC（02:00:00:00:00:aa）：否则网桥会取其端口中最小的MAC，每当容器增减网关的MAC都会变（各处ARP缓存随之失效）
ip link add cni0 address 02:00:00:00:00:aa type bridge
#undo ip link delete cni0

# 创建veth pair veth0a1b2c3d <--> eth0，对端直接创建在容器命名空间中
# 与教程不同（示例2步骤3创建、步骤4再移入），容器端直接在容器命名空间中创建：它的名字 eth0 会与主机自己的 eth0 冲突，而且移动设备要花15-50毫秒；`address` 给它固定的MAC
ip link add veth0a1b2c3d type veth peer name eth0 address 02:00:00:00:00:aa netns /run/netns/golden
#undo ip link delete veth0a1b2c3d
# 把 veth0a1b2c3d 接到网桥 cni0 上并启用（教程示例2，步骤4）
ip link set veth0a1b2c3d master cni0
# 启用主机端（教程示例2，步骤4：`ip link set veth-host up`）
ip link set veth0a1b2c3d up
# 在 cni0, veth0a1b2c3d 上设置 accept_ra=0：主机不能从容器发出的IPv6路由通告中获取地址或默认路由
sysctl -w net.ipv6.conf.cni0.accept_ra=0 net.ipv6.conf.veth0a1b2c3d.accept_ra=0

# 配置容器网络：地址、启用接口、路由（教程示例2，步骤5）
# 在容器中：arp_notify=1 在链路启用时用免费ARP通告地址（邻居立即更新）；启用IPv6，accept_dad=0 跳过重复地址检测（地址已由IPAM保证唯一，DAD会让它晚1-2秒可用）
nsenter --net=/run/netns/golden sysctl -w net.ipv4.conf.eth0.arp_notify=1 net.ipv6.conf.eth0.accept_dad=0
# IPAM分配的容器地址（教程示例2，步骤5：`ip addr add`）；`broadcast +` 按前缀计算广播地址
ip -n golden addr add 10.22.0.2/24 dev eth0 broadcast +
#undo ip -n golden addr del 10.22.0.2/24 dev eth0
# 启用容器的接口（教程示例2，步骤5）
ip -n golden link set eth0 up

# 启用网桥（教程示例2，步骤2：`ip link set br0 up`）；与参考插件一样放在容器端配置之后
ip link set cni0 up
# 给网桥分配网关地址 10.22.0.1/24
# 网关就是网桥自己的地址（教程示例2，步骤2：`ip addr add 10.1.1.1/24 dev br0`）：容器把其余流量都发给它
ip addr add 10.22.0.1/24 dev cni0 broadcast +
#undo ip addr del 10.22.0.1/24 dev cni0

# 启用IP转发，让主机在容器与外部之间转发（教程示例2，步骤6）；与参考插件一样不再关闭：其他网络可能也需要它
sysctl -w net.ipv4.ip_forward=1
#undo sysctl -w net.ipv4.ip_forward=0

# NAT访问外网：每个容器一条链 CNI-18dd9b30f72c996b4563eac9，对离开子网的流量做MASQUERADE
# 为这个容器建一条自己的链，名字来自网络名和容器ID的哈希（与参考插件相同，两者都能找到它）；-w 在其他程序持有xtables锁时等待而不是失败
iptables -w -t nat -N CNI-18dd9b30f72c996b4563eac9
#undo iptables -w -t nat -X CNI-18dd9b30f72c996b4563eac9
# 发往容器自身子网 10.22.0.0/24 的流量不做修改：ACCEPT 结束这条链，容器之间看到的是彼此的真实地址
iptables -w -t nat -A CNI-18dd9b30f72c996b4563eac9 -d 10.22.0.0/24 -m comment --comment 'name: "gold" id: "cnitool-277d583275450b09c54c"' -j ACCEPT
#undo iptables -w -t nat -D CNI-18dd9b30f72c996b4563eac9 -d 10.22.0.0/24 -m comment --comment 'name: "gold" id: "cnitool-277d583275450b09c54c"' -j ACCEPT
# 其余流量的源地址换成主机地址（教程示例2，步骤6：`-j MASQUERADE`），组播（224.0.0.0/4）除外，它不会离开本链路
iptables -w -t nat -A CNI-18dd9b30f72c996b4563eac9 ! -d 224.0.0.0/4 -m comment --comment 'name: "gold" id: "cnitool-277d583275450b09c54c"' -j MASQUERADE
#undo iptables -w -t nat -D CNI-18dd9b30f72c996b4563eac9 ! -d 224.0.0.0/4 -m comment --comment 'name: "gold" id: "cnitool-277d583275450b09c54c"' -j MASQUERADE
# 把这个容器的数据包（源地址 10.22.0.2/32）送进这条链；最后添加，保证第一个包到来时链已完整
iptables -w -t nat -A POSTROUTING -s 10.22.0.2/32 -m comment --comment 'name: "gold" id: "cnitool-277d583275450b09c54c"' -j CNI-18dd9b30f72c996b4563eac9
#undo iptables -w -t nat -D POSTROUTING -s 10.22.0.2/32 -m comment --comment 'name: "gold" id: "cnitool-277d583275450b09c54c"' -j CNI-18dd9b30f72c996b4563eac9
)

# 第 2 步：ADD @TMP@/bin/tuning，不是 cniplug 插件：libcni 会用下面的环境变量（外加它自己的环境）和标准输入执行它
# 这里不显示它的效果：只有 cniplug 插件能打印它将做的事。这次执行已被注释掉
# CNI_COMMAND=ADD CNI_CONTAINERID=cnitool-277d583275450b09c54c CNI_NETNS=/run/netns/golden CNI_ARGS='' CNI_IFNAME=eth0 CNI_PATH=@TMP@/bin @TMP@/bin/tuning <<'EOF'
# {"capabilities": {"mac": true}, "cniVersion": "1.0.0", "name": "gold", "prevResult": {"cniVersion": "1.0.0", "dns": {}, "interfaces": [{"mac": "02:00:00:00:00:aa", "name": "cni0"}, {"name": "veth0a1b2c3d"}, {"mac": "02:00:00:00:00:aa", "name": "eth0", "sandbox": "/run/netns/golden"}], "ips": [{"address": "10.22.0.2/24", "gateway": "10.22.0.1", "interface": 2}]}, "runtimeConfig": {"mac": "02:00:00:00:00:01"}, "sysctl": {"net.core.somaxconn": "512"}, "type": "tuning"}
# EOF
# 这里不知道它的结果：下一个插件得到的 prevResult 是前一个结果，就像链式插件原样传递的那样

# 第 3 步：ADD cniplug-loopback（@TMP@/bin/cniplug-loopback），cniplug 插件：它自己的 --dry-run 脚本，使用 libcni 会传给它的标准输入和 CNI_* 变量
# cniplug-loopback：它运行的命令
(
# 由 cniplug 生成：插件按此顺序运行的命令。同一命名空间中连续的 `ip` 行作为一次 `ip -batch -` 发送，
# 同一张表的 iptables 行作为一次 `iptables-restore --noflush` 发送：进程更少，效果相同。
# `#undo` 行说明后面的步骤失败时插件如何撤销它上面的那一步；bash 把它当作注释。
set -e
# 在容器中启用lo（教程示例1，步骤4：`ip link set lo up`）：否则容器内连127.0.0.1都不通
ip -n golden link set lo up
#undo ip -n golden link set lo down
)

# libcni 的结果缓存 @TMP@/cache/results/gold-cnitool-277d583275450b09c54c-eth0（kind 为 cniCacheV1）：DEL 和 CHECK 会读回它，cniplug net 和 cnitool 都一样
mkdir -p -m 0700 @TMP@/cache/results
(umask 077 && printf '%s' '{"kind":"cniCacheV1","containerId":"cnitool-277d583275450b09c54c","config":"eyJjbmlWZXJzaW9uIjogIjEuMC4wIiwgIm5hbWUiOiAiZ29sZCIsICJwbHVnaW5zIjogW3sidHlwZSI6ICJjbmlwbHVnLWJyaWRnZSIsICJicmlkZ2UiOiAiY25pMCIsICJpc0dhdGV3YXkiOiB0cnVlLCAiaXBNYXNxIjogdHJ1ZSwgImlwYW0iOiB7InR5cGUiOiAiY25pcGx1Zy1ob3N0LWxvY2FsIiwgImRhdGFEaXIiOiAiL25vbmV4aXN0ZW50L2NuaXBsdWctZ29sZGVuIiwgInJhbmdlcyI6IFtbeyJzdWJuZXQiOiAiMTAuMjIuMC4wLzI0In1dXX19LCB7InR5cGUiOiAidHVuaW5nIiwgImNhcGFiaWxpdGllcyI6IHsibWFjIjogdHJ1ZX0sICJzeXNjdGwiOiB7Im5ldC5jb3JlLnNvbWF4Y29ubiI6ICI1MTIifX0sIHsidHlwZSI6ICJjbmlwbHVnLWxvb3BiYWNrIn1dfQ==","ifName":"eth0","networkName":"gold","netns":"/run/netns/golden","capabilityArgs":{"mac":"02:00:00:00:00:01","portMappings":[]},"result":{"cniVersion":"1.0.0","dns":{},"interfaces":[{"mac":"02:00:00:00:00:aa","name":"cni0"},{"name":"veth0a1b2c3d"},{"mac":"02:00:00:00:00:aa","name":"eth0","sandbox":"/run/netns/golden"}],"ips":[{"address":"10.22.0.2/24","gateway":"10.22.0.1","interface":2}]}}' > @TMP@/cache/results/gold-cnitool-277d583275450b09c54c-eth0)
