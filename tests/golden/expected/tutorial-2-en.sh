#!/bin/bash
# The tutorial's example 2: its commands as written (its echo lines become these comments),
# rendered by cniplug from the macros its plugins use. Like the tutorial's scripts it has no `set -e`.
# An `#undo` line says how `cniplug tutorial 2 --run` takes the step above it back (with this
# host's values at printing time); bash reads it as a comment.

# Clean up what an earlier run may have left (safe: errors are hidden)
ip netns delete container-ns 2>/dev/null
ip link delete veth-host 2>/dev/null
ip link delete br0 2>/dev/null

# Step 1: create the container network namespace
ip netns add container-ns
#undo ip netns delete container-ns

# Step 2: create the bridge br0, give it the gateway address, bring it up
ip link add br0 type bridge
#undo ip link delete br0
ip addr add 10.1.1.1/24 dev br0
#undo ip addr del 10.1.1.1/24 dev br0
ip link set br0 up

# Step 3: create the veth pair veth-cont <--> veth-host
ip link add veth-cont type veth peer name veth-host
#undo ip link delete veth-cont

# Step 4: one end into the container, the other onto the bridge
ip link set veth-cont netns container-ns
ip link set veth-host master br0
#undo ip link set veth-host nomaster
ip link set veth-host up

# Step 5: configure the container: address, links up, default route via the bridge
ip netns exec container-ns ip addr add 10.1.1.2/24 dev veth-cont
#undo ip netns exec container-ns ip addr del 10.1.1.2/24 dev veth-cont
ip netns exec container-ns ip link set veth-cont up
ip netns exec container-ns ip link set lo up
ip netns exec container-ns ip route add default via 10.1.1.1
#undo ip netns exec container-ns ip route del default via 10.1.1.1

# Step 6: NAT so the container reaches the outside: forwarding, masquerade, FORWARD rules
sysctl -w net.ipv4.ip_forward=1
#undo sysctl -w net.ipv4.ip_forward=0
iptables -t nat -A POSTROUTING -s 10.1.1.0/24 -j MASQUERADE
#undo iptables -t nat -D POSTROUTING -s 10.1.1.0/24 -j MASQUERADE
iptables -A FORWARD -i br0 -o eth0 -j ACCEPT
#undo iptables -D FORWARD -i br0 -o eth0 -j ACCEPT
iptables -A FORWARD -i eth0 -o br0 -m state --state RELATED,ESTABLISHED -j ACCEPT
#undo iptables -D FORWARD -i eth0 -o br0 -m state --state RELATED,ESTABLISHED -j ACCEPT

# Step 7: check the connections: the gateway, then the outside
ip netns exec container-ns ping -c 3 10.1.1.1
ip netns exec container-ns ping -c 3 8.8.8.8

# Step 8: show the final configuration
# The topology now:
# +
# | host (br0:10.1.1.1)
# |   |
# |   veth-host
# |     (veth pair)
# |   veth-cont
# |   |
# | container namespace (veth-cont:10.1.1.2)
#observe
brctl show br0
# brctl (bridge-utils) is gone from current distributions; `ip link show master` lists the same ports
#observe
ip link show master br0
#observe
ip netns exec container-ns ip addr show
#observe
ip netns exec container-ns route -n
# route (net-tools) is gone from current distributions; `ip route` shows the same table
#observe
ip netns exec container-ns ip route show
