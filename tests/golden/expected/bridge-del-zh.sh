#!/bin/bash
# 由 cniplug 生成：插件按此顺序运行的命令。同一命名空间中连续的 `ip` 行作为一次 `ip -batch -` 发送，
# 同一张表的 iptables 行作为一次 `iptables-restore --noflush` 发送：进程更少，效果相同。
# `#undo` 行说明后面的步骤失败时插件如何撤销它上面的那一步；bash 把它当作注释。
set -e
# 删除容器接口 eth0；它在主机上的veth对端以及其上的路由和地址随之消失（`|| true`：DEL不会因为东西已经不在而失败）
ip -n golden link delete eth0 || true

# 删除NAT链 CNI-15815ef49e0fdf04a746924c 及跳转到它的规则
# 不再把容器的数据包送进这条链（`|| true`：已不存在也没关系）
iptables -w -t nat -D POSTROUTING -s 10.22.0.2/32 -m comment --comment 'name: "mynet" id: "c0ffee"' -j CNI-15815ef49e0fdf04a746924c || true
# 清空链 CNI-15815ef49e0fdf04a746924c
iptables -w -t nat -F CNI-15815ef49e0fdf04a746924c || true
# 删除链 CNI-15815ef49e0fdf04a746924c
iptables -w -t nat -X CNI-15815ef49e0fdf04a746924c || true
