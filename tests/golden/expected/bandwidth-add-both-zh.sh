#!/bin/bash
# 由 cniplug 生成：插件按此顺序运行的命令。同一命名空间中连续的 `ip` 行作为一次 `ip -batch -` 发送，
# 同一张表的 iptables 行作为一次 `iptables-restore --noflush` 发送：进程更少，效果相同。
# `#undo` 行说明后面的步骤失败时插件如何撤销它上面的那一步；bash 把它当作注释。
set -e
# 进入容器的流量：在主机发出它的地方整形，即 veth0a1b2c3d 的根上，用令牌桶（tbf），速率 1000000 bit/s，突发 100000 bit（ingressRate、ingressBurst）
# tc 的单位：rate 125000bps 是每秒字节数，burst 12500 是字节（配置值除以8，与参考插件相同）；包最多等待 25 ms，所以队列容纳 15625 字节（速率 * 25 ms + 突发）
tc qdisc add dev veth0a1b2c3d root handle 1: tbf rate 125000bps burst 12500 latency 25ms
#undo tc qdisc del dev veth0a1b2c3d root

# 容器发出的流量在 veth0a1b2c3d 上是入口流量，tc 无法在那里排队：把它重定向到 ifb 设备 bwpf3d134b288a3，在它离开时整形，速率 2000000 bit/s，突发 200000 bit（egressRate、egressBurst）
# 创建 ifb 设备 bwpf3d134b288a3，命名方式与参考插件相同（'bwp' + 网络名和容器ID的SHA-512），MTU 为主机端veth的 1450，没有自己的发送队列
ip link add bwpf3d134b288a3 mtu 1450 txqueuelen 0 type ifb
#undo ip link delete bwpf3d134b288a3
# 给它标注所属的连接（cniplug-bandwidth:bwnet:c0ffee），这样 GC 能区分本网络的 ifb 设备和其他网络的
ip link set bwpf3d134b288a3 alias cniplug-bandwidth:bwnet:c0ffee
# 启用 bwpf3d134b288a3：处于关闭状态的设备会丢弃重定向给它的包
ip link set bwpf3d134b288a3 up
# 在 bwpf3d134b288a3 上设置令牌桶，在任何流量重定向到它之前
# tc 的单位：rate 250000bps 是每秒字节数，burst 25000 是字节（配置值除以8，与参考插件相同）；包最多等待 25 ms，所以队列容纳 31250 字节（速率 * 25 ms + 突发）
tc qdisc add dev bwpf3d134b288a3 root handle 1: tbf rate 250000bps burst 25000 latency 25ms
# 在 veth0a1b2c3d 上添加 ingress qdisc（句柄 ffff:），过滤器在这里看到容器发出的包
tc qdisc add dev veth0a1b2c3d handle ffff: ingress
#undo tc qdisc del dev veth0a1b2c3d ingress
# 一个匹配所有包的过滤器（u32，match 0/0），把包重定向到 bwpf3d134b288a3；删除 ingress qdisc 时它也一起删除
tc filter add dev veth0a1b2c3d parent ffff: protocol all prio 1 u32 match u32 0 0 flowid 1:1 action mirred egress redirect dev bwpf3d134b288a3
