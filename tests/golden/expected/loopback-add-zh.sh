#!/bin/bash
# 由 cniplug 生成：插件按此顺序运行的命令。同一命名空间中连续的 `ip` 行作为一次 `ip -batch -` 发送，
# 同一张表的 iptables 行作为一次 `iptables-restore --noflush` 发送：进程更少，效果相同。
# `#undo` 行说明后面的步骤失败时插件如何撤销它上面的那一步；bash 把它当作注释。
set -e
# 在容器中启用lo（教程示例1，步骤4：`ip link set lo up`）：否则容器内连127.0.0.1都不通
ip -n golden link set lo up
#undo ip -n golden link set lo down
