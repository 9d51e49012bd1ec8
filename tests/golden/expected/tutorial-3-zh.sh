#!/bin/bash
# 教程示例3：命令与教程原文一致（教程中的 echo 说明改为这些注释），由cniplug用其插件所用的同一组宏生成。
# 与教程脚本一样没有 `set -e`。`#undo` 行说明 `cniplug tutorial 3 --run` 如何撤销上一步（取值来自打印时的本机）；
# bash把它当作注释。

# 清理可能存在的旧配置（安全操作）
ip netns delete router 2>/dev/null
ip netns delete client1 2>/dev/null
ip netns delete client2 2>/dev/null
ip link delete veth-r1 2>/dev/null
ip link delete veth-r2 2>/dev/null

# 步骤1：创建路由器和两个客户端命名空间
ip netns add router
#undo ip netns delete router
ip netns add client1
#undo ip netns delete client1
ip netns add client2
#undo ip netns delete client2

# 步骤2：每个客户端一对veth，路由器端和客户端端
ip link add veth-r1 type veth peer name veth-c1
#undo ip link delete veth-r1
ip link add veth-r2 type veth peer name veth-c2
#undo ip link delete veth-r2

# 步骤3：分配veth设备
ip link set veth-r1 netns router
ip link set veth-c1 netns client1
ip link set veth-r2 netns router
ip link set veth-c2 netns client2

# 步骤4：配置IP地址：路由器在每个子网取 .1，客户端经它路由
ip netns exec router ip addr add 10.0.1.1/24 dev veth-r1
#undo ip netns exec router ip addr del 10.0.1.1/24 dev veth-r1
ip netns exec router ip addr add 10.0.2.1/24 dev veth-r2
#undo ip netns exec router ip addr del 10.0.2.1/24 dev veth-r2
ip netns exec router ip link set veth-r1 up
ip netns exec router ip link set veth-r2 up
ip netns exec client1 ip addr add 10.0.1.100/24 dev veth-c1
#undo ip netns exec client1 ip addr del 10.0.1.100/24 dev veth-c1
ip netns exec client1 ip link set veth-c1 up
ip netns exec client1 ip link set lo up
ip netns exec client1 ip route add default via 10.0.1.1
#undo ip netns exec client1 ip route del default via 10.0.1.1
ip netns exec client2 ip addr add 10.0.2.100/24 dev veth-c2
#undo ip netns exec client2 ip addr del 10.0.2.100/24 dev veth-c2
ip netns exec client2 ip link set veth-c2 up
ip netns exec client2 ip link set lo up
ip netns exec client2 ip route add default via 10.0.2.1
#undo ip netns exec client2 ip route del default via 10.0.2.1

# 步骤5：启用路由器转发
ip netns exec router sysctl -w net.ipv4.ip_forward=1

# 步骤6：测试 client1 与 client2 经路由器的连通性
ip netns exec client1 ping -c 3 10.0.2.100
ip netns exec client2 ping -c 3 10.0.1.100

# 步骤7：显示网络拓扑、路由器的路由表和 client1 的邻居（ARP）表
# 当前网络拓扑:
# client1 (10.0.1.100) <--[veth]--> router (10.0.1.1)
#                                   |
# client2 (10.0.2.100) <--[veth]--> router (10.0.2.1)
#observe
ip netns exec router ip route show
#observe
ip netns exec client1 ip neigh show
