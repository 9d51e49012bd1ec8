#!/bin/bash
# 由 cniplug 生成：插件按此顺序运行的命令。同一命名空间中连续的 `ip` 行作为一次 `ip -batch -` 发送，
# 同一张表的 iptables 行作为一次 `iptables-restore --noflush` 发送：进程更少，效果相同。
# `#undo` 行说明后面的步骤失败时插件如何撤销它上面的那一步；bash 把它当作注释。
set -e
# 本节点：n1，Pod 网段 10.244.1.0/24，地址 192.168.50.11
# 节点 n2：Pod 网段 10.244.2.0/24，经由 192.168.50.12

# 删除经由 192.168.50.19 去 10.244.9.0/24 的路由：已没有节点在那里持有这个 Pod 网段
ip route del 10.244.9.0/24 via 192.168.50.19 proto 222
#undo ip route add 10.244.9.0/24 via 192.168.50.19 proto 222

# 经由它们的节点 192.168.50.12 路由 10.244.2.0/24 的 Pod（host-gw，教程示例3）；proto 222 标记本代理的路由
ip route add 10.244.2.0/24 via 192.168.50.12 proto 222
#undo ip route del 10.244.2.0/24 via 192.168.50.12 proto 222

# 删除位置不在 CNI 伪装链之前的、跳到本代理链的规则
iptables -w -t nat -D POSTROUTING -m comment --comment 'cniplug node: cluster traffic before the CNI masquerade chains' -j CNIPLUG-POSTRTG
#undo iptables -w -t nat -I POSTROUTING 1 -m comment --comment 'cniplug node: cluster traffic before the CNI masquerade chains' -j CNIPLUG-POSTRTG

# POSTROUTING 首先跳到 CNIPLUG-POSTRTG，在 cniplug-bridge 的 ipMasq 建的 CNI-xxxx 伪装链之前
iptables -w -t nat -I POSTROUTING 1 -m comment --comment 'cniplug node: cluster traffic before the CNI masquerade chains' -j CNIPLUG-POSTRTG
#undo iptables -w -t nat -D POSTROUTING -m comment --comment 'cniplug node: cluster traffic before the CNI masquerade chains' -j CNIPLUG-POSTRTG
