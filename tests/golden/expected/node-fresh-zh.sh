#!/bin/bash
# 由 cniplug 生成：插件按此顺序运行的命令。同一命名空间中连续的 `ip` 行作为一次 `ip -batch -` 发送，
# 同一张表的 iptables 行作为一次 `iptables-restore --noflush` 发送：进程更少，效果相同。
# `#undo` 行说明后面的步骤失败时插件如何撤销它上面的那一步；bash 把它当作注释。
set -e
# 本节点：n1，Pod 网段 10.244.1.0/24，地址 192.168.50.11
# 节点 n2：Pod 网段 10.244.2.0/24，经由 192.168.50.12
# 节点 n3：Pod 网段 10.244.3.0/24，经由 -
# 不为节点 n3 的 10.244.3.0/24 加路由：还不知道它的地址

# 启用IP转发：节点在自己的 Pod 和其他节点之间转发（教程示例3）
sysctl -w net.ipv4.ip_forward=1
#undo sysctl -w net.ipv4.ip_forward=0

# 经由它们的节点 192.168.50.12 路由 10.244.2.0/24 的 Pod（host-gw，教程示例3）；proto 222 标记本代理的路由
ip route add 10.244.2.0/24 via 192.168.50.12 proto 222
#undo ip route del 10.244.2.0/24 via 192.168.50.12 proto 222

# 创建本代理的 nat 链 CNIPLUG-POSTRTG
iptables -w -t nat -N CNIPLUG-POSTRTG
#undo iptables -w -t nat -X CNIPLUG-POSTRTG

# 集群网段内 Pod 到 Pod：ACCEPT 结束 nat 表的处理，CNI 的伪装链不会改写源地址（在 CNIPLUG-POSTRTG 里用 RETURN 会回到 POSTROUTING 再被伪装）
iptables -w -t nat -A CNIPLUG-POSTRTG -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment 'cniplug node: pod to pod in the cluster keeps its source' -j ACCEPT
#undo iptables -w -t nat -D CNIPLUG-POSTRTG -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment 'cniplug node: pod to pod in the cluster keeps its source' -j ACCEPT

# POSTROUTING 首先跳到 CNIPLUG-POSTRTG，在 cniplug-bridge 的 ipMasq 建的 CNI-xxxx 伪装链之前
iptables -w -t nat -I POSTROUTING 1 -m comment --comment 'cniplug node: cluster traffic before the CNI masquerade chains' -j CNIPLUG-POSTRTG
#undo iptables -w -t nat -D POSTROUTING -m comment --comment 'cniplug node: cluster traffic before the CNI masquerade chains' -j CNIPLUG-POSTRTG

# 原子地写入本节点的网络配置列表 /etc/cni/net.d/10-cniplug.conflist（先写临时文件再 mv）：从此运行时可以在这里启动 Pod
sh -c 'umask 022 && mkdir -p "${2%/*}" && printf %b "$1" > "$2.cniplug-tmp" && mv -f "$2.cniplug-tmp" "$2"' cniplug '{\n  "cniVersion": "1.0.0",\n  "name": "cniplug-pods",\n  "plugins": [\n    {\n      "type": "cniplug-loopback"\n    },\n    {\n      "type": "cniplug-bridge",\n      "bridge": "cni0",\n      "isGateway": true,\n      "ipMasq": true,\n      "ipam": {\n        "type": "cniplug-host-local",\n        "ranges": [\n          [\n            {\n              "subnet": "10.244.1.0/24"\n            }\n          ]\n        ],\n        "routes": [\n          {\n            "dst": "0.0.0.0/0"\n          }\n        ]\n      }\n    }\n  ]\n}\n' /etc/cni/net.d/10-cniplug.conflist
#undo rm -f /etc/cni/net.d/10-cniplug.conflist
