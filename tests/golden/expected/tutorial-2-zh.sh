#!/bin/bash
# 教程示例2：命令与教程原文一致（教程中的 echo 说明改为这些注释），由cniplug用其插件所用的同一组宏生成。
# 与教程脚本一样没有 `set -e`。`#undo` 行说明 `cniplug tutorial 2 --run` 如何撤销上一步（取值来自打印时的本机）；
# bash把它当作注释。

# 清理可能存在的旧配置（安全操作）
ip netns delete container-ns 2>/dev/null
ip link delete veth-host 2>/dev/null
ip link delete br0 2>/dev/null

# 步骤1：创建容器网络命名空间
ip netns add container-ns
#undo ip netns delete container-ns

# 步骤2：创建网桥 br0，分配网关地址并启用
ip link add br0 type bridge
#undo ip link delete br0
ip addr add 10.1.1.1/24 dev br0
#undo ip addr del 10.1.1.1/24 dev br0
ip link set br0 up

# 步骤3：创建veth pair veth-cont <--> veth-host
ip link add veth-cont type veth peer name veth-host
#undo ip link delete veth-cont

# 步骤4：一端放入容器，另一端连接到网桥
ip link set veth-cont netns container-ns
ip link set veth-host master br0
#undo ip link set veth-host nomaster
ip link set veth-host up

# 步骤5：配置容器网络：地址、启用接口、经网桥的默认路由
ip netns exec container-ns ip addr add 10.1.1.2/24 dev veth-cont
#undo ip netns exec container-ns ip addr del 10.1.1.2/24 dev veth-cont
ip netns exec container-ns ip link set veth-cont up
ip netns exec container-ns ip link set lo up
ip netns exec container-ns ip route add default via 10.1.1.1
#undo ip netns exec container-ns ip route del default via 10.1.1.1

# 步骤6：配置NAT使容器访问外网：IP转发、MASQUERADE、FORWARD规则
sysctl -w net.ipv4.ip_forward=1
#undo sysctl -w net.ipv4.ip_forward=0
iptables -t nat -A POSTROUTING -s 10.1.1.0/24 -j MASQUERADE
#undo iptables -t nat -D POSTROUTING -s 10.1.1.0/24 -j MASQUERADE
iptables -A FORWARD -i br0 -o eth0 -j ACCEPT
#undo iptables -D FORWARD -i br0 -o eth0 -j ACCEPT
iptables -A FORWARD -i eth0 -o br0 -m state --state RELATED,ESTABLISHED -j ACCEPT
#undo iptables -D FORWARD -i eth0 -o br0 -m state --state RELATED,ESTABLISHED -j ACCEPT

# 步骤7：验证连接：先网关，再外网
ip netns exec container-ns ping -c 3 10.1.1.1
ip netns exec container-ns ping -c 3 8.8.8.8

# 步骤8：显示最终配置
# 当前网络拓扑:
# +
# | 主机 (br0:10.1.1.1)
# |   |
# |   veth-host
# |     (veth pair)
# |   veth-cont
# |   |
# | 容器网络空间 (veth-cont:10.1.1.2)
#observe
brctl show br0
# 当前发行版已不再默认提供 brctl（bridge-utils）；`ip link show master` 列出同样的端口
#observe
ip link show master br0
#observe
ip netns exec container-ns ip addr show
#observe
ip netns exec container-ns route -n
# 当前发行版已不再默认提供 route（net-tools）；`ip route` 显示同样的路由表
#observe
ip netns exec container-ns ip route show
