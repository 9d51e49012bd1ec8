#!/bin/bash
# 由 cniplug 生成：插件按此顺序运行的命令。同一命名空间中连续的 `ip` 行作为一次 `ip -batch -` 发送，
# 同一张表的 iptables 行作为一次 `iptables-restore --noflush` 发送：进程更少，效果相同。
# `#undo` 行说明后面的步骤失败时插件如何撤销它上面的那一步；bash 把它当作注释。
set -e
# 在容器命名空间内写入配置的 sysctl（只允许每个命名空间独立的 net.* 键；IFNAME 已替换为 eth0）；与参考插件一样 DEL 不恢复它们：它们随命名空间一起消失
nsenter --net=/run/netns/golden sysctl -w net/core/somaxconn=512
#undo nsenter --net=/run/netns/golden sysctl -w net/core/somaxconn=4096
# 修改链路之前，插件把原来的值保存到 @TMP@/tuning/c0ffee_eth0.json（与参考插件的文件和格式相同，任一插件的 DEL 都能恢复；已有的文件保持不变）：
#   {
#    "mac": "02:00:00:00:00:aa",
#    "mtu": 1500
#   }
# 把 eth0 的MAC设为 02:00:00:aa:bb:dd；结果中该接口的MAC随之更新
ip -n golden link set dev eth0 address 02:00:00:aa:bb:dd
#undo ip -n golden link set dev eth0 address 02:00:00:00:00:aa
# 把 eth0 的MTU设为 1400
ip -n golden link set dev eth0 mtu 1400
#undo ip -n golden link set dev eth0 mtu 1500
# 插件在以上步骤成功后自己（用 Python，权限 0600）写入 @TMP@/tuning/c0ffee_eth0.json；对 bash 来说，这一行做同样的事
sh -c 'umask 077 && mkdir -p -m "$3" "${2%/*}" && { [ -e "$2" ] || printf %b "$1" > "$2"; }' cniplug '{\n "mac": "02:00:00:00:00:aa",\n "mtu": 1500\n}' @TMP@/tuning/c0ffee_eth0.json 0600
