#!/bin/bash
# 由 cniplug 生成：插件按此顺序运行的命令。同一命名空间中连续的 `ip` 行作为一次 `ip -batch -` 发送，
# 同一张表的 iptables 行作为一次 `iptables-restore --noflush` 发送：进程更少，效果相同。
# `#undo` 行说明后面的步骤失败时插件如何撤销它上面的那一步；bash 把它当作注释。
set -e
# 撤销节点代理维护的一切（`|| true`：已不存在也没关系）
# 删除本代理建的经由 192.168.50.19 去 10.244.9.0/24 的路由
ip route del 10.244.9.0/24 via 192.168.50.19 proto 222 || true
# 删除 POSTROUTING 到 CNIPLUG-POSTRTG 的跳转
iptables -w -t nat -D POSTROUTING -m comment --comment 'cniplug node: cluster traffic before the CNI masquerade chains' -j CNIPLUG-POSTRTG || true
# 清空链 CNIPLUG-POSTRTG
iptables -w -t nat -F CNIPLUG-POSTRTG || true
# 删除链 CNIPLUG-POSTRTG
iptables -w -t nat -X CNIPLUG-POSTRTG || true
# 删除本节点的网络配置列表 /etc/cni/net.d/10-cniplug.conflist
rm -f /etc/cni/net.d/10-cniplug.conflist
