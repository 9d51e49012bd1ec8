#!/bin/bash
# 由 cniplug 生成：插件按此顺序运行的命令。同一命名空间中连续的 `ip` 行作为一次 `ip -batch -` 发送，
# 同一张表的 iptables 行作为一次 `iptables-restore --noflush` 发送：进程更少，效果相同。
# `#undo` 行说明后面的步骤失败时插件如何撤销它上面的那一步；bash 把它当作注释。
set -e
# IPv4（iptables，nat 表）：经容器自己的链 CNI-DN-15815ef49e0fdf04a7469 把主机端口转发给容器
# 共享链 CNI-HOSTPORT-SETMARK（与参考插件同名，所有容器共用）：给需要做地址伪装的转发包打标记；-w 等待 xtables 锁
iptables -w -t nat -N CNI-HOSTPORT-SETMARK
#undo iptables -w -t nat -X CNI-HOSTPORT-SETMARK
# 它给送进来的每个包设置标记位 0x2000/0x2000（markMasqBit）
iptables -w -t nat -A CNI-HOSTPORT-SETMARK -m comment --comment 'CNI portfwd masquerade mark' -j MARK --set-xmark 0x2000/0x2000
#undo iptables -w -t nat -D CNI-HOSTPORT-SETMARK -m comment --comment 'CNI portfwd masquerade mark' -j MARK --set-xmark 0x2000/0x2000
# 共享链 CNI-HOSTPORT-MASQ：对带标记的包在发出时做地址伪装
iptables -w -t nat -N CNI-HOSTPORT-MASQ
#undo iptables -w -t nat -X CNI-HOSTPORT-MASQ
# 带标记 0x2000/0x2000 的包以出接口的地址作为源地址发出，于是应答经主机返回并在那里还原地址
iptables -w -t nat -A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE
#undo iptables -w -t nat -D CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE
# 共享链 CNI-HOSTPORT-DNAT：发往主机自身地址的包在这里查找它的主机端口
iptables -w -t nat -N CNI-HOSTPORT-DNAT
#undo iptables -w -t nat -X CNI-HOSTPORT-DNAT
# 这个容器自己的链 CNI-DN-15815ef49e0fdf04a7469：CNI-DN- 加网络名和容器ID的哈希，与参考插件同名，两者的 DEL 都能找到它
iptables -w -t nat -N CNI-DN-15815ef49e0fdf04a7469
#undo iptables -w -t nat -X CNI-DN-15815ef49e0fdf04a7469
# *:8080/tcp：回环（hairpin）：来自容器自身子网的包（容器自己或网桥上的邻居）先送到 CNI-HOSTPORT-SETMARK 以做地址伪装：否则应答会绕过主机，无法还原DNAT
iptables -w -t nat -A CNI-DN-15815ef49e0fdf04a7469 -s 10.22.0.0/24 -p tcp --dport 8080 -j CNI-HOSTPORT-SETMARK
#undo iptables -w -t nat -D CNI-DN-15815ef49e0fdf04a7469 -s 10.22.0.0/24 -p tcp --dport 8080 -j CNI-HOSTPORT-SETMARK
# *:8080/tcp：来自 127.0.0.1（主机经 localhost 访问）的包也送到 CNI-HOSTPORT-SETMARK：源地址为 127.0.0.1 的包不能离开主机，地址伪装把它换成网桥的地址
iptables -w -t nat -A CNI-DN-15815ef49e0fdf04a7469 -s 127.0.0.1 -p tcp --dport 8080 -j CNI-HOSTPORT-SETMARK
#undo iptables -w -t nat -D CNI-DN-15815ef49e0fdf04a7469 -s 127.0.0.1 -p tcp --dport 8080 -j CNI-HOSTPORT-SETMARK
# *:8080/tcp：目的地址改为容器的 10.22.0.2:80（DNAT）
iptables -w -t nat -A CNI-DN-15815ef49e0fdf04a7469 -p tcp --dport 8080 -j DNAT --to-destination 10.22.0.2:80
#undo iptables -w -t nat -D CNI-DN-15815ef49e0fdf04a7469 -p tcp --dport 8080 -j DNAT --to-destination 10.22.0.2:80
# *:8053/udp：回环（hairpin）：来自容器自身子网的包（容器自己或网桥上的邻居）先送到 CNI-HOSTPORT-SETMARK 以做地址伪装：否则应答会绕过主机，无法还原DNAT
iptables -w -t nat -A CNI-DN-15815ef49e0fdf04a7469 -s 10.22.0.0/24 -p udp --dport 8053 -j CNI-HOSTPORT-SETMARK
#undo iptables -w -t nat -D CNI-DN-15815ef49e0fdf04a7469 -s 10.22.0.0/24 -p udp --dport 8053 -j CNI-HOSTPORT-SETMARK
# *:8053/udp：来自 127.0.0.1（主机经 localhost 访问）的包也送到 CNI-HOSTPORT-SETMARK：源地址为 127.0.0.1 的包不能离开主机，地址伪装把它换成网桥的地址
iptables -w -t nat -A CNI-DN-15815ef49e0fdf04a7469 -s 127.0.0.1 -p udp --dport 8053 -j CNI-HOSTPORT-SETMARK
#undo iptables -w -t nat -D CNI-DN-15815ef49e0fdf04a7469 -s 127.0.0.1 -p udp --dport 8053 -j CNI-HOSTPORT-SETMARK
# *:8053/udp：目的地址改为容器的 10.22.0.2:53（DNAT）
iptables -w -t nat -A CNI-DN-15815ef49e0fdf04a7469 -p udp --dport 8053 -j DNAT --to-destination 10.22.0.2:53
#undo iptables -w -t nat -D CNI-DN-15815ef49e0fdf04a7469 -p udp --dport 8053 -j DNAT --to-destination 10.22.0.2:53
# 10.22.0.1:9000/sctp：回环（hairpin）：来自容器自身子网的包（容器自己或网桥上的邻居）先送到 CNI-HOSTPORT-SETMARK 以做地址伪装：否则应答会绕过主机，无法还原DNAT
iptables -w -t nat -A CNI-DN-15815ef49e0fdf04a7469 -s 10.22.0.0/24 -d 10.22.0.1 -p sctp --dport 9000 -j CNI-HOSTPORT-SETMARK
#undo iptables -w -t nat -D CNI-DN-15815ef49e0fdf04a7469 -s 10.22.0.0/24 -d 10.22.0.1 -p sctp --dport 9000 -j CNI-HOSTPORT-SETMARK
# 10.22.0.1:9000/sctp：来自 127.0.0.1（主机经 localhost 访问）的包也送到 CNI-HOSTPORT-SETMARK：源地址为 127.0.0.1 的包不能离开主机，地址伪装把它换成网桥的地址
iptables -w -t nat -A CNI-DN-15815ef49e0fdf04a7469 -s 127.0.0.1 -d 10.22.0.1 -p sctp --dport 9000 -j CNI-HOSTPORT-SETMARK
#undo iptables -w -t nat -D CNI-DN-15815ef49e0fdf04a7469 -s 127.0.0.1 -d 10.22.0.1 -p sctp --dport 9000 -j CNI-HOSTPORT-SETMARK
# 10.22.0.1:9000/sctp：目的地址改为容器的 10.22.0.2:90（DNAT）
iptables -w -t nat -A CNI-DN-15815ef49e0fdf04a7469 -d 10.22.0.1 -p sctp --dport 9000 -j DNAT --to-destination 10.22.0.2:90
#undo iptables -w -t nat -D CNI-DN-15815ef49e0fdf04a7469 -d 10.22.0.1 -p sctp --dport 9000 -j DNAT --to-destination 10.22.0.2:90
# 把发往主机端口 9000 的 sctp 包送进 CNI-DN-15815ef49e0fdf04a7469；注释写明网络和容器（GC 读取它）；在链完整之后才添加
iptables -w -t nat -A CNI-HOSTPORT-DNAT -p sctp -m comment --comment 'dnat name: "mynet" id: "c0ffee"' -m multiport --dports 9000 -j CNI-DN-15815ef49e0fdf04a7469
#undo iptables -w -t nat -D CNI-HOSTPORT-DNAT -p sctp -m comment --comment 'dnat name: "mynet" id: "c0ffee"' -m multiport --dports 9000 -j CNI-DN-15815ef49e0fdf04a7469
# 把发往主机端口 8080 的 tcp 包送进 CNI-DN-15815ef49e0fdf04a7469；注释写明网络和容器（GC 读取它）；在链完整之后才添加
iptables -w -t nat -A CNI-HOSTPORT-DNAT -p tcp -m comment --comment 'dnat name: "mynet" id: "c0ffee"' -m multiport --dports 8080 -j CNI-DN-15815ef49e0fdf04a7469
#undo iptables -w -t nat -D CNI-HOSTPORT-DNAT -p tcp -m comment --comment 'dnat name: "mynet" id: "c0ffee"' -m multiport --dports 8080 -j CNI-DN-15815ef49e0fdf04a7469
# 把发往主机端口 8053 的 udp 包送进 CNI-DN-15815ef49e0fdf04a7469；注释写明网络和容器（GC 读取它）；在链完整之后才添加
iptables -w -t nat -A CNI-HOSTPORT-DNAT -p udp -m comment --comment 'dnat name: "mynet" id: "c0ffee"' -m multiport --dports 8053 -j CNI-DN-15815ef49e0fdf04a7469
#undo iptables -w -t nat -D CNI-HOSTPORT-DNAT -p udp -m comment --comment 'dnat name: "mynet" id: "c0ffee"' -m multiport --dports 8053 -j CNI-DN-15815ef49e0fdf04a7469
# PREROUTING：到达的、目的为主机自身地址的包（addrtype LOCAL：来自外部或容器）经过 CNI-HOSTPORT-DNAT
iptables -w -t nat -A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
#undo iptables -w -t nat -D PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
# OUTPUT：主机自己发往自身地址（包括 127.0.0.1）的包经过 CNI-HOSTPORT-DNAT
iptables -w -t nat -A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
#undo iptables -w -t nat -D OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
# POSTROUTING：每个包先经过 CNI-HOSTPORT-MASQ（与参考插件一样插在第1条）
iptables -w -t nat -I POSTROUTING 1 -m comment --comment 'CNI portfwd requiring masquerade' -j CNI-HOSTPORT-MASQ
#undo iptables -w -t nat -D POSTROUTING -m comment --comment 'CNI portfwd requiring masquerade' -j CNI-HOSTPORT-MASQ

# IPv6（ip6tables，nat 表）：经容器自己的链 CNI-DN-15815ef49e0fdf04a7469 把主机端口转发给容器
# 共享链 CNI-HOSTPORT-SETMARK（与参考插件同名，所有容器共用）：给需要做地址伪装的转发包打标记；-w 等待 xtables 锁
ip6tables -w -t nat -N CNI-HOSTPORT-SETMARK
#undo ip6tables -w -t nat -X CNI-HOSTPORT-SETMARK
# 它给送进来的每个包设置标记位 0x2000/0x2000（markMasqBit）
ip6tables -w -t nat -A CNI-HOSTPORT-SETMARK -m comment --comment 'CNI portfwd masquerade mark' -j MARK --set-xmark 0x2000/0x2000
#undo ip6tables -w -t nat -D CNI-HOSTPORT-SETMARK -m comment --comment 'CNI portfwd masquerade mark' -j MARK --set-xmark 0x2000/0x2000
# 共享链 CNI-HOSTPORT-MASQ：对带标记的包在发出时做地址伪装
ip6tables -w -t nat -N CNI-HOSTPORT-MASQ
#undo ip6tables -w -t nat -X CNI-HOSTPORT-MASQ
# 带标记 0x2000/0x2000 的包以出接口的地址作为源地址发出，于是应答经主机返回并在那里还原地址
ip6tables -w -t nat -A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE
#undo ip6tables -w -t nat -D CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE
# 共享链 CNI-HOSTPORT-DNAT：发往主机自身地址的包在这里查找它的主机端口
ip6tables -w -t nat -N CNI-HOSTPORT-DNAT
#undo ip6tables -w -t nat -X CNI-HOSTPORT-DNAT
# 这个容器自己的链 CNI-DN-15815ef49e0fdf04a7469：CNI-DN- 加网络名和容器ID的哈希，与参考插件同名，两者的 DEL 都能找到它
ip6tables -w -t nat -N CNI-DN-15815ef49e0fdf04a7469
#undo ip6tables -w -t nat -X CNI-DN-15815ef49e0fdf04a7469
# *:8080/tcp：回环（hairpin）：来自容器自身子网的包（容器自己或网桥上的邻居）先送到 CNI-HOSTPORT-SETMARK 以做地址伪装：否则应答会绕过主机，无法还原DNAT
ip6tables -w -t nat -A CNI-DN-15815ef49e0fdf04a7469 -s fd22::/64 -p tcp --dport 8080 -j CNI-HOSTPORT-SETMARK
#undo ip6tables -w -t nat -D CNI-DN-15815ef49e0fdf04a7469 -s fd22::/64 -p tcp --dport 8080 -j CNI-HOSTPORT-SETMARK
# *:8080/tcp：目的地址改为容器的 [fd22::2]:80（DNAT）
ip6tables -w -t nat -A CNI-DN-15815ef49e0fdf04a7469 -p tcp --dport 8080 -j DNAT --to-destination '[fd22::2]:80'
#undo ip6tables -w -t nat -D CNI-DN-15815ef49e0fdf04a7469 -p tcp --dport 8080 -j DNAT --to-destination '[fd22::2]:80'
# *:8053/udp：回环（hairpin）：来自容器自身子网的包（容器自己或网桥上的邻居）先送到 CNI-HOSTPORT-SETMARK 以做地址伪装：否则应答会绕过主机，无法还原DNAT
ip6tables -w -t nat -A CNI-DN-15815ef49e0fdf04a7469 -s fd22::/64 -p udp --dport 8053 -j CNI-HOSTPORT-SETMARK
#undo ip6tables -w -t nat -D CNI-DN-15815ef49e0fdf04a7469 -s fd22::/64 -p udp --dport 8053 -j CNI-HOSTPORT-SETMARK
# *:8053/udp：目的地址改为容器的 [fd22::2]:53（DNAT）
ip6tables -w -t nat -A CNI-DN-15815ef49e0fdf04a7469 -p udp --dport 8053 -j DNAT --to-destination '[fd22::2]:53'
#undo ip6tables -w -t nat -D CNI-DN-15815ef49e0fdf04a7469 -p udp --dport 8053 -j DNAT --to-destination '[fd22::2]:53'
# 把发往主机端口 9000 的 sctp 包送进 CNI-DN-15815ef49e0fdf04a7469；注释写明网络和容器（GC 读取它）；在链完整之后才添加
ip6tables -w -t nat -A CNI-HOSTPORT-DNAT -p sctp -m comment --comment 'dnat name: "mynet" id: "c0ffee"' -m multiport --dports 9000 -j CNI-DN-15815ef49e0fdf04a7469
#undo ip6tables -w -t nat -D CNI-HOSTPORT-DNAT -p sctp -m comment --comment 'dnat name: "mynet" id: "c0ffee"' -m multiport --dports 9000 -j CNI-DN-15815ef49e0fdf04a7469
# 把发往主机端口 8080 的 tcp 包送进 CNI-DN-15815ef49e0fdf04a7469；注释写明网络和容器（GC 读取它）；在链完整之后才添加
ip6tables -w -t nat -A CNI-HOSTPORT-DNAT -p tcp -m comment --comment 'dnat name: "mynet" id: "c0ffee"' -m multiport --dports 8080 -j CNI-DN-15815ef49e0fdf04a7469
#undo ip6tables -w -t nat -D CNI-HOSTPORT-DNAT -p tcp -m comment --comment 'dnat name: "mynet" id: "c0ffee"' -m multiport --dports 8080 -j CNI-DN-15815ef49e0fdf04a7469
# 把发往主机端口 8053 的 udp 包送进 CNI-DN-15815ef49e0fdf04a7469；注释写明网络和容器（GC 读取它）；在链完整之后才添加
ip6tables -w -t nat -A CNI-HOSTPORT-DNAT -p udp -m comment --comment 'dnat name: "mynet" id: "c0ffee"' -m multiport --dports 8053 -j CNI-DN-15815ef49e0fdf04a7469
#undo ip6tables -w -t nat -D CNI-HOSTPORT-DNAT -p udp -m comment --comment 'dnat name: "mynet" id: "c0ffee"' -m multiport --dports 8053 -j CNI-DN-15815ef49e0fdf04a7469
# PREROUTING：到达的、目的为主机自身地址的包（addrtype LOCAL：来自外部或容器）经过 CNI-HOSTPORT-DNAT
ip6tables -w -t nat -A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
#undo ip6tables -w -t nat -D PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
# OUTPUT：主机自己发往自身地址（包括 127.0.0.1）的包经过 CNI-HOSTPORT-DNAT
ip6tables -w -t nat -A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
#undo ip6tables -w -t nat -D OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
# POSTROUTING：每个包先经过 CNI-HOSTPORT-MASQ（与参考插件一样插在第1条）
ip6tables -w -t nat -I POSTROUTING 1 -m comment --comment 'CNI portfwd requiring masquerade' -j CNI-HOSTPORT-MASQ
#undo ip6tables -w -t nat -D POSTROUTING -m comment --comment 'CNI portfwd requiring masquerade' -j CNI-HOSTPORT-MASQ

# 在通往容器的接口 cni0 上设置 route_localnet=1：允许内核把经DNAT发往容器的 localhost 包从它发出；与参考插件一样不再复原（其他容器也在用）
sysctl -w net.ipv4.conf.cni0.route_localnet=1
#undo sysctl -w net.ipv4.conf.cni0.route_localnet=0
