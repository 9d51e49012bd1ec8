#!/bin/bash
# 由 cniplug 生成：插件按此顺序运行的命令。同一命名空间中连续的 `ip` 行作为一次 `ip -batch -` 发送，
# 同一张表的 iptables 行作为一次 `iptables-restore --noflush` 发送：进程更少，效果相同。
# `#undo` 行说明后面的步骤失败时插件如何撤销它上面的那一步；bash 把它当作注释。
set -e
# 删除 CNI-DN-15815ef49e0fdf04a7469（iptables）及跳转到它的规则；共享的 CNI-HOSTPORT-* 链留给其他容器
# 清空链 CNI-DN-15815ef49e0fdf04a7469
iptables -w -t nat -F CNI-DN-15815ef49e0fdf04a7469 || true
# 删除链 CNI-DN-15815ef49e0fdf04a7469
iptables -w -t nat -X CNI-DN-15815ef49e0fdf04a7469 || true
