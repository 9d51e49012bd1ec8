#!/bin/bash
# 由 cniplug 生成：插件按此顺序运行的命令。同一命名空间中连续的 `ip` 行作为一次 `ip -batch -` 发送，
# 同一张表的 iptables 行作为一次 `iptables-restore --noflush` 发送：进程更少，效果相同。
# `#undo` 行说明后面的步骤失败时插件如何撤销它上面的那一步；bash 把它当作注释。
set -e
# iptables，filter 表：与参考 firewall 插件相同（链名、规则和注释一致），让这个容器的流量通过 FORWARD
# 创建共享链 CNI-FORWARD（所有容器的放行规则都在这里；DEL 后保留）
iptables -w -t filter -N CNI-FORWARD
#undo iptables -w -t filter -X CNI-FORWARD
# 创建管理员链 CNI-ADMIN：插件从不往里写规则；放在这里的规则先于容器的规则生效
iptables -w -t filter -N CNI-ADMIN
#undo iptables -w -t filter -X CNI-ADMIN
# 让转发的流量先进入 CNI-FORWARD（FORWARD 的第1条），这样 FORWARD 策略为 DROP 时也不会被拦住
iptables -w -t filter -I FORWARD 1 -m comment --comment 'CNI firewall plugin rules' -j CNI-FORWARD
#undo iptables -w -t filter -D FORWARD -m comment --comment 'CNI firewall plugin rules' -j CNI-FORWARD
# CNI-FORWARD 的第一条：跳到管理员的覆盖规则链 CNI-ADMIN
iptables -w -t filter -I CNI-FORWARD 1 -m comment --comment 'CNI firewall plugin admin overrides' -j CNI-ADMIN
#undo iptables -w -t filter -D CNI-FORWARD -m comment --comment 'CNI firewall plugin admin overrides' -j CNI-ADMIN
# 发往容器（10.232.200.2/32）的应答：只放行已建立连接的数据包（conntrack RELATED,ESTABLISHED）
iptables -w -t filter -A CNI-FORWARD -d 10.232.200.2/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
#undo iptables -w -t filter -D CNI-FORWARD -d 10.232.200.2/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
# 容器（10.232.200.2/32）发出的一切流量都可以被转发
iptables -w -t filter -A CNI-FORWARD -s 10.232.200.2/32 -j ACCEPT
#undo iptables -w -t filter -D CNI-FORWARD -s 10.232.200.2/32 -j ACCEPT
# ingressPolicy same-bridge：创建参考插件的隔离链 CNI-ISOLATION-STAGE-1（共享，DEL 后保留）
iptables -w -t filter -N CNI-ISOLATION-STAGE-1
#undo iptables -w -t filter -X CNI-ISOLATION-STAGE-1
# ingressPolicy same-bridge：创建参考插件的隔离链 CNI-ISOLATION-STAGE-2（共享，DEL 后保留）
iptables -w -t filter -N CNI-ISOLATION-STAGE-2
#undo iptables -w -t filter -X CNI-ISOLATION-STAGE-2
# 第1阶段：从网桥 cni0 进入、从别的接口离开的流量交给第2阶段
iptables -w -t filter -I CNI-ISOLATION-STAGE-1 1 -i cni0 ! -o cni0 -m comment --comment 'CNI firewall plugin rules (ingressPolicy: same-bridge)' -j CNI-ISOLATION-STAGE-2
#undo iptables -w -t filter -D CNI-ISOLATION-STAGE-1 -i cni0 ! -o cni0 -m comment --comment 'CNI firewall plugin rules (ingressPolicy: same-bridge)' -j CNI-ISOLATION-STAGE-2
# 其他流量原样离开 CNI-ISOLATION-STAGE-1（RETURN，最后一条）
iptables -w -t filter -A CNI-ISOLATION-STAGE-1 -m comment --comment 'CNI firewall plugin rules (ingressPolicy: same-bridge)' -j RETURN
#undo iptables -w -t filter -D CNI-ISOLATION-STAGE-1 -m comment --comment 'CNI firewall plugin rules (ingressPolicy: same-bridge)' -j RETURN
# 第2阶段：这样的流量如果要从 cni0 离开就丢弃：不同隔离网桥上的容器彼此不通
iptables -w -t filter -I CNI-ISOLATION-STAGE-2 1 -o cni0 -m comment --comment 'CNI firewall plugin rules (ingressPolicy: same-bridge)' -j DROP
#undo iptables -w -t filter -D CNI-ISOLATION-STAGE-2 -o cni0 -m comment --comment 'CNI firewall plugin rules (ingressPolicy: same-bridge)' -j DROP
# 其他流量原样离开 CNI-ISOLATION-STAGE-2（RETURN，最后一条）
iptables -w -t filter -A CNI-ISOLATION-STAGE-2 -m comment --comment 'CNI firewall plugin rules (ingressPolicy: same-bridge)' -j RETURN
#undo iptables -w -t filter -D CNI-ISOLATION-STAGE-2 -m comment --comment 'CNI firewall plugin rules (ingressPolicy: same-bridge)' -j RETURN
# 先检查隔离：在 FORWARD 的第1条插入跳到 CNI-ISOLATION-STAGE-1 的规则
iptables -w -t filter -I FORWARD 1 -m comment --comment 'CNI firewall plugin rules (ingressPolicy: same-bridge)' -j CNI-ISOLATION-STAGE-1
#undo iptables -w -t filter -D FORWARD -m comment --comment 'CNI firewall plugin rules (ingressPolicy: same-bridge)' -j CNI-ISOLATION-STAGE-1
# ip6tables，filter 表：与参考 firewall 插件相同（链名、规则和注释一致），让这个容器的流量通过 FORWARD
# 创建共享链 CNI-FORWARD（所有容器的放行规则都在这里；DEL 后保留）
ip6tables -w -t filter -N CNI-FORWARD
#undo ip6tables -w -t filter -X CNI-FORWARD
# 创建管理员链 CNI-ADMIN：插件从不往里写规则；放在这里的规则先于容器的规则生效
ip6tables -w -t filter -N CNI-ADMIN
#undo ip6tables -w -t filter -X CNI-ADMIN
# 让转发的流量先进入 CNI-FORWARD（FORWARD 的第1条），这样 FORWARD 策略为 DROP 时也不会被拦住
ip6tables -w -t filter -I FORWARD 1 -m comment --comment 'CNI firewall plugin rules' -j CNI-FORWARD
#undo ip6tables -w -t filter -D FORWARD -m comment --comment 'CNI firewall plugin rules' -j CNI-FORWARD
# CNI-FORWARD 的第一条：跳到管理员的覆盖规则链 CNI-ADMIN
ip6tables -w -t filter -I CNI-FORWARD 1 -m comment --comment 'CNI firewall plugin admin overrides' -j CNI-ADMIN
#undo ip6tables -w -t filter -D CNI-FORWARD -m comment --comment 'CNI firewall plugin admin overrides' -j CNI-ADMIN
# 发往容器（fd10:232:200::2/128）的应答：只放行已建立连接的数据包（conntrack RELATED,ESTABLISHED）
ip6tables -w -t filter -A CNI-FORWARD -d fd10:232:200::2/128 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
#undo ip6tables -w -t filter -D CNI-FORWARD -d fd10:232:200::2/128 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
# 容器（fd10:232:200::2/128）发出的一切流量都可以被转发
ip6tables -w -t filter -A CNI-FORWARD -s fd10:232:200::2/128 -j ACCEPT
#undo ip6tables -w -t filter -D CNI-FORWARD -s fd10:232:200::2/128 -j ACCEPT
# ingressPolicy same-bridge：创建参考插件的隔离链 CNI-ISOLATION-STAGE-1（共享，DEL 后保留）
ip6tables -w -t filter -N CNI-ISOLATION-STAGE-1
#undo ip6tables -w -t filter -X CNI-ISOLATION-STAGE-1
# ingressPolicy same-bridge：创建参考插件的隔离链 CNI-ISOLATION-STAGE-2（共享，DEL 后保留）
ip6tables -w -t filter -N CNI-ISOLATION-STAGE-2
#undo ip6tables -w -t filter -X CNI-ISOLATION-STAGE-2
# 第1阶段：从网桥 cni0 进入、从别的接口离开的流量交给第2阶段
ip6tables -w -t filter -I CNI-ISOLATION-STAGE-1 1 -i cni0 ! -o cni0 -m comment --comment 'CNI firewall plugin rules (ingressPolicy: same-bridge)' -j CNI-ISOLATION-STAGE-2
#undo ip6tables -w -t filter -D CNI-ISOLATION-STAGE-1 -i cni0 ! -o cni0 -m comment --comment 'CNI firewall plugin rules (ingressPolicy: same-bridge)' -j CNI-ISOLATION-STAGE-2
# 其他流量原样离开 CNI-ISOLATION-STAGE-1（RETURN，最后一条）
ip6tables -w -t filter -A CNI-ISOLATION-STAGE-1 -m comment --comment 'CNI firewall plugin rules (ingressPolicy: same-bridge)' -j RETURN
#undo ip6tables -w -t filter -D CNI-ISOLATION-STAGE-1 -m comment --comment 'CNI firewall plugin rules (ingressPolicy: same-bridge)' -j RETURN
# 第2阶段：这样的流量如果要从 cni0 离开就丢弃：不同隔离网桥上的容器彼此不通
ip6tables -w -t filter -I CNI-ISOLATION-STAGE-2 1 -o cni0 -m comment --comment 'CNI firewall plugin rules (ingressPolicy: same-bridge)' -j DROP
#undo ip6tables -w -t filter -D CNI-ISOLATION-STAGE-2 -o cni0 -m comment --comment 'CNI firewall plugin rules (ingressPolicy: same-bridge)' -j DROP
# 其他流量原样离开 CNI-ISOLATION-STAGE-2（RETURN，最后一条）
ip6tables -w -t filter -A CNI-ISOLATION-STAGE-2 -m comment --comment 'CNI firewall plugin rules (ingressPolicy: same-bridge)' -j RETURN
#undo ip6tables -w -t filter -D CNI-ISOLATION-STAGE-2 -m comment --comment 'CNI firewall plugin rules (ingressPolicy: same-bridge)' -j RETURN
# 先检查隔离：在 FORWARD 的第1条插入跳到 CNI-ISOLATION-STAGE-1 的规则
ip6tables -w -t filter -I FORWARD 1 -m comment --comment 'CNI firewall plugin rules (ingressPolicy: same-bridge)' -j CNI-ISOLATION-STAGE-1
#undo ip6tables -w -t filter -D FORWARD -m comment --comment 'CNI firewall plugin rules (ingressPolicy: same-bridge)' -j CNI-ISOLATION-STAGE-1
# 这些步骤之后，插件把容器的地址记录到 /run/cniplug/firewall/fw-d8bef832cd9981457677256a670393f4.json（供 GC 使用：参考插件的规则里没有容器ID）
# 插件在以上步骤成功后自己（用 Python，权限 0600）写入 /run/cniplug/firewall/fw-d8bef832cd9981457677256a670393f4.json；对 bash 来说，这一行做同样的事
sh -c 'umask 077 && mkdir -p -m "$3" "${2%/*}" && printf %b "$1" > "$2.tmp" && mv -f "$2.tmp" "$2"' cniplug '{"network": "golden-net", "containerID": "c0ffee", "ifname": "eth0", "ips": ["10.232.200.2/32", "fd10:232:200::2/128"]}' /run/cniplug/firewall/fw-d8bef832cd9981457677256a670393f4.json 0700
