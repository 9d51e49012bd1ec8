#!/bin/bash
# 教程示例1：命令与教程原文一致（教程中的 echo 说明改为这些注释），由cniplug用其插件所用的同一组宏生成。
# 与教程脚本一样没有 `set -e`。`#undo` 行说明 `cniplug tutorial 1 --run` 如何撤销上一步（取值来自打印时的本机）；
# bash把它当作注释。

# 清理可能存在的旧配置（安全操作）
ip netns delete ns1 2>/dev/null
ip netns delete ns2 2>/dev/null
ip link delete veth0 2>/dev/null

# 步骤1：创建网络命名空间，模拟两个隔离的网络环境
ip netns add ns1
#undo ip netns delete ns1
ip netns add ns2
#undo ip netns delete ns2

# 步骤2：创建veth-pair，veth0 和 veth1 自动连接
ip link add veth0 type veth peer name veth1
#undo ip link delete veth0

# 步骤3：将veth分配到命名空间
ip link set veth0 netns ns1
ip link set veth1 netns ns2

# 步骤4：配置IP地址并启用设备
ip netns exec ns1 ip addr add 192.168.1.1/24 dev veth0
#undo ip netns exec ns1 ip addr del 192.168.1.1/24 dev veth0
ip netns exec ns1 ip link set veth0 up
ip netns exec ns1 ip link set lo up
ip netns exec ns2 ip addr add 192.168.1.2/24 dev veth1
#undo ip netns exec ns2 ip addr del 192.168.1.2/24 dev veth1
ip netns exec ns2 ip link set veth1 up
ip netns exec ns2 ip link set lo up

# 步骤5：测试连通性
ip netns exec ns1 ping -c 3 192.168.1.2
ip netns exec ns2 ping -c 3 192.168.1.1

# 步骤6：查看设备详细信息：`veth0@ifN` 给出对端的接口索引，`link-netns` 给出它所在的命名空间
#observe
ip netns exec ns1 ip -d link show
#observe
ip netns exec ns2 ip -d link show
#observe
ip netns exec ns1 ethtool -S veth0
# ethtool 常常没有安装；`ip -d link show` 同样显示对端索引（`@ifN`）和它所在的命名空间
#observe
ip netns exec ns1 ip -d link show veth0
