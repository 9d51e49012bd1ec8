#!/bin/bash
# 由 cniplug 生成：插件按此顺序运行的命令。同一命名空间中连续的 `ip` 行作为一次 `ip -batch -` 发送，
# 同一张表的 iptables 行作为一次 `iptables-restore --noflush` 发送：进程更少，效果相同。
# `#undo` 行说明后面的步骤失败时插件如何撤销它上面的那一步；bash 把它当作注释。
set -e
# IPAM（cniplug-host-local）分配了 10.22.0.2/24, fd22::2/64；地址预留由IPAM完成，不在本脚本中
# 创建网桥 cni0（教程示例2，步骤2）
# 创建时就固定网桥的MAC（02:00:00:00:00:aa）：否则网桥会取其端口中最小的MAC，每当容器增减网关的MAC都会变（各处ARP缓存随之失效）
# mtu 1400：网络中的每条链路都使用配置的MTU（教程中是默认值1500）
ip link add cni0 mtu 1400 address 02:00:00:00:00:aa type bridge
#undo ip link delete cni0

# 创建veth pair veth0a1b2c3d <--> eth0，对端直接创建在容器命名空间中
# 与教程不同（示例2步骤3创建、步骤4再移入），容器端直接在容器命名空间中创建：它的名字 eth0 会与主机自己的 eth0 冲突，而且移动设备要花15-50毫秒；`address` 给它固定的MAC
ip link add veth0a1b2c3d mtu 1400 type veth peer name eth0 mtu 1400 address 02:00:00:00:00:aa netns /run/netns/golden
#undo ip link delete veth0a1b2c3d
# 把 veth0a1b2c3d 接到网桥 cni0 上并启用（教程示例2，步骤4）
ip link set veth0a1b2c3d master cni0
# hairpinMode：网桥可以把帧从它进入的端口再发回去，容器经过指回自己的地址（如服务的DNAT）也能访问到自己
ip link set veth0a1b2c3d type bridge_slave hairpin on
# 启用主机端（教程示例2，步骤4：`ip link set veth-host up`）
ip link set veth0a1b2c3d up
# 在 cni0, veth0a1b2c3d 上设置 accept_ra=0：主机不能从容器发出的IPv6路由通告中获取地址或默认路由
sysctl -w net.ipv6.conf.cni0.accept_ra=0 net.ipv6.conf.veth0a1b2c3d.accept_ra=0

# 配置容器网络：地址、启用接口、路由（教程示例2，步骤5）
# 在容器中：arp_notify=1 在链路启用时用免费ARP通告地址（邻居立即更新）；启用IPv6，accept_dad=0 跳过重复地址检测（地址已由IPAM保证唯一，DAD会让它晚1-2秒可用）
nsenter --net=/run/netns/golden sysctl -w net.ipv4.conf.eth0.arp_notify=1 net.ipv6.conf.eth0.disable_ipv6=0 net.ipv6.conf.eth0.accept_dad=0
# IPAM分配的容器地址（教程示例2，步骤5：`ip addr add`）；`broadcast +` 按前缀计算广播地址
ip -n golden addr add 10.22.0.2/24 dev eth0 broadcast +
#undo ip -n golden addr del 10.22.0.2/24 dev eth0
# IPAM分配的容器IPv6地址（教程示例2，步骤5对IPv4做同样的事）
ip -n golden addr add fd22::2/64 dev eth0
#undo ip -n golden addr del fd22::2/64 dev eth0
# 启用容器的接口（教程示例2，步骤5）
ip -n golden link set eth0 up
# 经网关到 0.0.0.0/0 的路由，来自配置（教程示例2，步骤5：`ip route add default via ...`）
ip -n golden route add 0.0.0.0/0 via 10.22.0.1 dev eth0
#undo ip -n golden route del 0.0.0.0/0 via 10.22.0.1 dev eth0
# 经网关到 ::/0 的路由，来自配置（教程示例2，步骤5：`ip route add default via ...`）
ip -n golden route add ::/0 via fd22::1 dev eth0
#undo ip -n golden route del ::/0 via fd22::1 dev eth0

# 启用网桥（教程示例2，步骤2：`ip link set br0 up`）；与参考插件一样放在容器端配置之后
ip link set cni0 up
# 给网桥分配网关地址 10.22.0.1/24
# 网关就是网桥自己的地址（教程示例2，步骤2：`ip addr add 10.1.1.1/24 dev br0`）：容器把其余流量都发给它
ip addr add 10.22.0.1/24 dev cni0 broadcast +
#undo ip addr del 10.22.0.1/24 dev cni0
# 给网桥分配网关地址 fd22::1/64
# 网关就是网桥自己的地址（教程示例2，步骤2：`ip addr add 10.1.1.1/24 dev br0`）：容器把其余流量都发给它
ip addr add fd22::1/64 dev cni0
#undo ip addr del fd22::1/64 dev cni0

# 启用IP转发，让主机在容器与外部之间转发（教程示例2，步骤6）；与参考插件一样不再关闭：其他网络可能也需要它
sysctl -w net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
#undo sysctl -w net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0

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
# 为这个容器建一条自己的链，名字来自网络名和容器ID的哈希（与参考插件相同，两者都能找到它）；-w 在其他程序持有xtables锁时等待而不是失败
ip6tables -w -t nat -N CNI-15815ef49e0fdf04a746924c
#undo ip6tables -w -t nat -X CNI-15815ef49e0fdf04a746924c
# 发往容器自身子网 fd22::/64 的流量不做修改：ACCEPT 结束这条链，容器之间看到的是彼此的真实地址
ip6tables -w -t nat -A CNI-15815ef49e0fdf04a746924c -d fd22::/64 -m comment --comment 'name: "mynet" id: "c0ffee"' -j ACCEPT
#undo ip6tables -w -t nat -D CNI-15815ef49e0fdf04a746924c -d fd22::/64 -m comment --comment 'name: "mynet" id: "c0ffee"' -j ACCEPT
# 其余流量的源地址换成主机地址（教程示例2，步骤6：`-j MASQUERADE`），组播（ff00::/8）除外，它不会离开本链路
ip6tables -w -t nat -A CNI-15815ef49e0fdf04a746924c ! -d ff00::/8 -m comment --comment 'name: "mynet" id: "c0ffee"' -j MASQUERADE
#undo ip6tables -w -t nat -D CNI-15815ef49e0fdf04a746924c ! -d ff00::/8 -m comment --comment 'name: "mynet" id: "c0ffee"' -j MASQUERADE
# 把这个容器的数据包（源地址 fd22::2/128）送进这条链；最后添加，保证第一个包到来时链已完整
ip6tables -w -t nat -A POSTROUTING -s fd22::2/128 -m comment --comment 'name: "mynet" id: "c0ffee"' -j CNI-15815ef49e0fdf04a746924c
#undo ip6tables -w -t nat -D POSTROUTING -s fd22::2/128 -m comment --comment 'name: "mynet" id: "c0ffee"' -j CNI-15815ef49e0fdf04a746924c
