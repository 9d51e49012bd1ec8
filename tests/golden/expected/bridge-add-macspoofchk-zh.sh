#!/bin/bash
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

# macspoofchk：来自 veth0a1b2c3d 的帧必须使用容器的 MAC 02:00:00:00:00:aa，其余丢弃（nftables，bridge 族）
# 创建表 bridge nat（与参考插件一样，之后保留）
nft add table bridge nat
#undo nft delete table bridge nat
# 创建其 PREROUTING 基础链（filter，优先级 -300，默认接受）
nft add chain bridge nat PREROUTING '{ type filter hook prerouting priority -300; policy accept; }'
#undo nft delete chain bridge nat PREROUTING
# 创建链 cni-br-iface-c0ffee-eth0-mac：此端口的 MAC 检查
nft add chain bridge nat cni-br-iface-c0ffee-eth0-mac
#undo nft delete chain bridge nat cni-br-iface-c0ffee-eth0-mac
# 源 MAC 为 02:00:00:00:00:aa 的帧放行
nft add rule bridge nat cni-br-iface-c0ffee-eth0-mac ether saddr 02:00:00:00:00:aa return comment '"macspoofchk-c0ffee-eth0"'
#undo nft flush chain bridge nat cni-br-iface-c0ffee-eth0-mac
# 其他帧一律丢弃
nft add rule bridge nat cni-br-iface-c0ffee-eth0-mac drop comment '"macspoofchk-c0ffee-eth0"'
#undo nft flush chain bridge nat cni-br-iface-c0ffee-eth0-mac
# 创建链 cni-br-iface-c0ffee-eth0：此端口的检查
nft add chain bridge nat cni-br-iface-c0ffee-eth0
#undo nft delete chain bridge nat cni-br-iface-c0ffee-eth0
# 其中执行 MAC 检查 cni-br-iface-c0ffee-eth0-mac
nft add rule bridge nat cni-br-iface-c0ffee-eth0 jump cni-br-iface-c0ffee-eth0-mac comment '"macspoofchk-c0ffee-eth0"'
#undo nft flush chain bridge nat cni-br-iface-c0ffee-eth0
# 从 veth0a1b2c3d 进入网桥的帧经过此端口的检查
nft --echo --handle add rule bridge nat PREROUTING iifname '"veth0a1b2c3d"' jump cni-br-iface-c0ffee-eth0 comment '"macspoofchk-c0ffee-eth0"'
#undo nft delete rule bridge nat PREROUTING handle @handle
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
# 经网关到 0.0.0.0/0 的路由，来自配置（教程示例2，步骤5：`ip route add default via ...`）
ip -n golden route add 0.0.0.0/0 via 10.22.0.1 dev eth0
#undo ip -n golden route del 0.0.0.0/0 via 10.22.0.1 dev eth0

# 启用网桥（教程示例2，步骤2：`ip link set br0 up`）；与参考插件一样放在容器端配置之后
ip link set cni0 up
# 给网桥分配网关地址 10.22.0.1/24
# 网关就是网桥自己的地址（教程示例2，步骤2：`ip addr add 10.1.1.1/24 dev br0`）：容器把其余流量都发给它
ip addr add 10.22.0.1/24 dev cni0 broadcast +
#undo ip addr del 10.22.0.1/24 dev cni0

# 启用IP转发，让主机在容器与外部之间转发（教程示例2，步骤6）；与参考插件一样不再关闭：其他网络可能也需要它
sysctl -w net.ipv4.ip_forward=1
#undo sysctl -w net.ipv4.ip_forward=0
