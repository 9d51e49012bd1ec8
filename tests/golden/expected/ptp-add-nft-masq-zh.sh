#!/bin/bash
# 由 cniplug 生成：插件按此顺序运行的命令。同一命名空间中连续的 `ip` 行作为一次 `ip -batch -` 发送，
# 同一张表的 iptables 行作为一次 `iptables-restore --noflush` 发送：进程更少，效果相同。
# `#undo` 行说明后面的步骤失败时插件如何撤销它上面的那一步；bash 把它当作注释。
set -e
# IPAM（cniplug-host-local）分配了 10.22.0.2/24, fd22::2/64；地址预留由IPAM完成，不在本脚本中
# 创建veth pair veth0a1b2c3d <--> eth0：主机（充当路由器）与容器之间的链路（教程示例3，步骤2）
# 与教程不同（示例3步骤2创建、步骤3再移入），容器端直接在容器命名空间中创建：它的名字 eth0 会与主机自己的 eth0 冲突，而且移动设备要花15-50毫秒；`address` 给它固定的MAC
ip link add veth0a1b2c3d type veth peer name eth0 address 02:00:00:00:00:aa netns /run/netns/golden
#undo ip link delete veth0a1b2c3d

# 主机端：在 veth0a1b2c3d 上配置网关地址，并为每个容器地址添加主机路由
# 启用主机端（教程示例3，步骤4：路由器启用它的各个接口）
ip link set veth0a1b2c3d up
# 主机端的网关地址只是一个地址（10.22.0.1/32）：点对点链路不需要子网，每个容器的主机端都使用同一个网关地址（示例3中路由器每条链路一个地址）
ip addr add 10.22.0.1/32 dev veth0a1b2c3d
#undo ip addr del 10.22.0.1/32 dev veth0a1b2c3d
# 主机如何到达容器：经这条veth到容器这一个地址（10.22.0.2/32）的路由；scope host 与参考插件一致（示例3中路由器则通过自己的地址得知客户端子网）
ip route add 10.22.0.2/32 dev veth0a1b2c3d scope host
#undo ip route del 10.22.0.2/32 dev veth0a1b2c3d scope host
# 主机端的网关地址只是一个地址（fd22::1/128）：点对点链路不需要子网，每个容器的主机端都使用同一个网关地址（示例3中路由器每条链路一个地址）
# nodad：两端的链路上不会有重复地址，无需检测，地址立即可用
ip addr add fd22::1/128 dev veth0a1b2c3d nodad
#undo ip addr del fd22::1/128 dev veth0a1b2c3d
# 主机如何到达容器：经这条veth到容器这一个地址（fd22::2/128）的路由；scope host 与参考插件一致（示例3中路由器则通过自己的地址得知客户端子网）
ip route add fd22::2/128 dev veth0a1b2c3d scope host
#undo ip route del fd22::2/128 dev veth0a1b2c3d scope host
# 在 veth0a1b2c3d 上设置 accept_ra=0：主机不能从容器发出的IPv6路由通告中获取地址或默认路由
# 启用IP转发，让主机在容器与外部之间转发（教程示例3，步骤5）；与参考插件一样不再关闭：其他网络可能也需要它
sysctl -w net.ipv6.conf.veth0a1b2c3d.accept_ra=0 net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
#undo sysctl -w net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0

# 容器端：地址、启用接口、经点对点链路上的网关的路由
# IPAM分配的容器地址（教程示例3，步骤4：`ip addr add`）；`broadcast +` 按前缀计算广播地址
ip -n golden addr add 10.22.0.2/24 dev eth0 broadcast +
#undo ip -n golden addr del 10.22.0.2/24 dev eth0
# IPAM分配的容器IPv6地址（教程示例3，步骤4对IPv4做同样的事）
# nodad：两端的链路上不会有重复地址，无需检测，地址立即可用
ip -n golden addr add fd22::2/64 dev eth0 nodad
#undo ip -n golden addr del fd22::2/64 dev eth0
# 启用容器的接口（教程示例3，步骤4）
ip -n golden link set eth0 up
# 经网关到 0.0.0.0/0 的路由，来自配置（教程示例3，步骤4：`ip route add default via ...`）
ip -n golden route add 0.0.0.0/0 via 10.22.0.1 dev eth0
#undo ip -n golden route del 0.0.0.0/0 via 10.22.0.1 dev eth0
# 在容器中做成点对点，第1步（共3步）：删除内核到整个子网 10.22.0.0/24 的直连路由（这条链路上除了主机没有别的邻居）
ip -n golden route del 10.22.0.0/24 dev eth0
#undo ip -n golden route add 10.22.0.0/24 dev eth0 scope link src 10.22.0.2 proto kernel
# 第2步：网关 10.22.0.1 在链路上直接可达（scope link）
ip -n golden route add 10.22.0.1/32 dev eth0 scope link src 10.22.0.2
#undo ip -n golden route del 10.22.0.1/32 dev eth0 scope link src 10.22.0.2
# 第3步：10.22.0.0/24 的其余地址也经网关，所以连同一子网的邻居也经主机（示例3中的路由器）到达
ip -n golden route add 10.22.0.0/24 via 10.22.0.1 dev eth0 src 10.22.0.2
#undo ip -n golden route del 10.22.0.0/24 via 10.22.0.1 dev eth0 src 10.22.0.2
# 在容器中做成点对点，第1步（共3步）：删除内核到整个子网 fd22::/64 的直连路由（这条链路上除了主机没有别的邻居）
ip -n golden route del fd22::/64 dev eth0
#undo ip -n golden route add fd22::/64 dev eth0 scope link src fd22::2 proto kernel
# 第2步：网关 fd22::1 在链路上直接可达（scope link）
ip -n golden route add fd22::1/128 dev eth0 scope link src fd22::2
#undo ip -n golden route del fd22::1/128 dev eth0 scope link src fd22::2
# 第3步：fd22::/64 的其余地址也经网关，所以连同一子网的邻居也经主机（示例3中的路由器）到达
ip -n golden route add fd22::/64 via fd22::1 dev eth0 src fd22::2
#undo ip -n golden route del fd22::/64 via fd22::1 dev eth0 src fd22::2

# 用 nftables 做 NAT（ipMasqBackend 为 nftables）：容器发往其子网以外的流量使用主机地址发出，规则在与参考插件共用的表 inet cni_plugins_masquerade 中（教程示例2，步骤6）
# 创建该表（每台主机一次；与参考插件一样，之后保留）
nft add table inet cni_plugins_masquerade '{ comment "Masquerading for plugins from github.com/containernetworking/plugins"; }'
#undo nft delete table inet cni_plugins_masquerade
# 创建链 masq_checks：每个容器地址一条伪装规则
nft add chain inet cni_plugins_masquerade masq_checks '{ comment "Masquerade traffic from certain IPs to any (non-multicast) IP outside their subnet"; }'
#undo nft delete chain inet cni_plugins_masquerade masq_checks
# 创建 postrouting 基础链（nat 钩子，srcnat 优先级），把流量交给这些规则
nft add chain inet cni_plugins_masquerade postrouting '{ type nat hook postrouting priority srcnat; }'
#undo nft delete chain inet cni_plugins_masquerade postrouting
# 组播流量（224.0.0.0/4）不做伪装
nft add rule inet cni_plugins_masquerade postrouting ip daddr 224.0.0.0/4 return
#undo nft flush chain inet cni_plugins_masquerade postrouting
# 组播流量（ff00::/8）不做伪装
nft add rule inet cni_plugins_masquerade postrouting ip6 daddr ff00::/8 return
#undo nft flush chain inet cni_plugins_masquerade postrouting
# 其余流量交给链 masq_checks 检查
nft add rule inet cni_plugins_masquerade postrouting goto masq_checks
#undo nft flush chain inet cni_plugins_masquerade postrouting
# 伪装 10.22.0.2 发往 10.22.0.0/24 以外的流量；注释标明此次接入，DEL 和 GC 据此找到规则
nft --echo --handle add rule inet cni_plugins_masquerade masq_checks ip saddr 10.22.0.2 ip daddr != 10.22.0.0/24 masquerade comment '"644e8f9942fa5aa7-a9bcd915bbe82469, net: pnet, if: eth0, id: c0ffee"'
#undo nft delete rule inet cni_plugins_masquerade masq_checks handle @handle
# 伪装 fd22::2 发往 fd22::/64 以外的流量；注释标明此次接入，DEL 和 GC 据此找到规则
nft --echo --handle add rule inet cni_plugins_masquerade masq_checks ip6 saddr fd22::2 ip6 daddr != fd22::/64 masquerade comment '"644e8f9942fa5aa7-a9bcd915bbe82469, net: pnet, if: eth0, id: c0ffee"'
#undo nft delete rule inet cni_plugins_masquerade masq_checks handle @handle
