#!/bin/bash
# 由 cniplug 生成：插件按此顺序运行的命令。同一命名空间中连续的 `ip` 行作为一次 `ip -batch -` 发送，
# 同一张表的 iptables 行作为一次 `iptables-restore --noflush` 发送：进程更少，效果相同。
# `#undo` 行说明后面的步骤失败时插件如何撤销它上面的那一步；bash 把它当作注释。
set -e
# 删除容器关于 10.232.200.2/32 的规则（`|| true`：已不存在也没关系）
iptables -w -t filter -D CNI-FORWARD -s 10.232.200.2/32 -j ACCEPT || true
# 共享链 CNI-FORWARD、CNI-ADMIN 和隔离链保留：其他容器还在使用
