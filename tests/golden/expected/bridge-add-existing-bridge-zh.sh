#!/bin/bash
# 由 cniplug 生成：插件按此顺序运行的命令。同一命名空间中连续的 `ip` 行作为一次 `ip -batch -` 发送，
# 同一张表的 iptables 行作为一次 `iptables-restore --noflush` 发送：进程更少，效果相同。
# `#undo` 行说明后面的步骤失败时插件如何撤销它上面的那一步；bash 把它当作注释。
set -e
# IPAM（cniplug-host-local）分配了 10.22.0.2/24；地址预留由IPAM完成，不在本脚本中
# 网桥 cni0 已存在：直接使用

# 创建veth pair veth0a1b2c3d <--> eth0，对端直接创建在容器命名空间中
# 与教程不同（示例2步骤3创建、步骤4再移入），容器端直接在容器命名空间中创建：它的名字 eth0 会与主机自己的 eth0 冲突，而且移动设备要花15-50毫秒；`address` 给它固定的MAC
ip link add veth0a1b2c3d type veth peer name eth0 address 02:42:0a:16:00:09 netns /run/netns/golden
#undo ip link delete veth0a1b2c3d
# 把 veth0a1b2c3d 接到网桥 cni0 上并启用（教程示例2，步骤4）
ip link set veth0a1b2c3d master cni0
# 启用主机端（教程示例2，步骤4：`ip link set veth-host up`）
ip link set veth0a1b2c3d up
# 在 veth0a1b2c3d 上设置 accept_ra=0：主机不能从容器发出的IPv6路由通告中获取地址或默认路由
sysctl -w net.ipv6.conf.veth0a1b2c3d.accept_ra=0

# 配置容器网络：地址、启用接口、路由（教程示例2，步骤5）
# 在容器中：arp_notify=1 在链路启用时用免费ARP通告地址（邻居立即更新）；启用IPv6，accept_dad=0 跳过重复地址检测（地址已由IPAM保证唯一，DAD会让它晚1-2秒可用）
nsenter --net=/run/netns/golden sysctl -w net.ipv4.conf.eth0.arp_notify=1 net.ipv6.conf.eth0.accept_dad=0
# IPAM分配的容器地址（教程示例2，步骤5：`ip addr add`）；`broadcast +` 按前缀计算广播地址
ip -n golden addr add 10.22.0.2/24 dev eth0 broadcast +
#undo ip -n golden addr del 10.22.0.2/24 dev eth0
# 启用容器的接口（教程示例2，步骤5）
ip -n golden link set eth0 up

# 网桥已有网关地址 10.22.0.1/24

# NAT访问外网：每个容器一条链 CNI-15815ef49e0fdf04a746924c，对离开子网的流量做MASQUERADE
# 为这个容器建一条自己的链，名字来自网络名和容器ID的哈希（与参考插件相同，两者都能找到它）；-w 在其他程序持有xtables锁时等待而不是失败
iptables -w -t nat -N CNI-15815ef49e0fdf04a746924c
#undo iptables -w -t nat -X CNI-15815ef49e0fdf04a746924c
# 发往容器自身子网 10.22.0.0/24 的流量不做修改：ACCEPT 结束这条链，容器之间看到的是彼此的真实地址
iptables -w -t nat -A CNI-15815ef49e0fdf04a746924c -d 10.22.0.0/24 -m comment --comment 'name: "mynet" id: "c0ffee"' -j ACCEPT
#undo iptables -w -t nat -D CNI-15815ef49e0fdf04a746924c -d 10.22.0.0/24 -m comment --comment 'name: "mynet" id: "c0ffee"' -j ACCEPT
# 其余流量的源地址换成主机地址（教程示例2，步骤6：`-j MASQUERADE`），组播（224.0.0.0/4）除外，它不会离开本链路
iptables -w -t nat -A CNI-15815ef49e0fdf04a746924c ! -d 224.0.0.0/4 -m comment --comment 'name: "mynet" id: "c0ffee"' -j MASQUERADE
#undo iptables -w -t nat -D CNI-15815ef49e0fdf04a746924c ! -d 224.0.0.0/4 -m comment --comment 'name: "mynet" id: "c0ffee"' -j MASQUERADE
# 把这个容器的数据包（源地址 10.22.0.2/32）送进这条链；最后添加，保证第一个包到来时链已完整
iptables -w -t nat -A POSTROUTING -s 10.22.0.2/32 -m comment --comment 'name: "mynet" id: "c0ffee"' -j CNI-15815ef49e0fdf04a746924c
#undo iptables -w -t nat -D POSTROUTING -s 10.22.0.2/32 -m comment --comment 'name: "mynet" id: "c0ffee"' -j CNI-15815ef49e0fdf04a746924c
