#!/bin/bash
# The tutorial's example 3: its commands as written (its echo lines become these comments),
# rendered by cniplug from the macros its plugins use. Like the tutorial's scripts it has no `set -e`.
# An `#undo` line says how `cniplug tutorial 3 --run` takes the step above it back (with this
# host's values at printing time); bash reads it as a comment.

# Clean up what an earlier run may have left (safe: errors are hidden)
ip netns delete router 2>/dev/null
ip netns delete client1 2>/dev/null
ip netns delete client2 2>/dev/null
ip link delete veth-r1 2>/dev/null
ip link delete veth-r2 2>/dev/null

# Step 1: create the router and two client namespaces
ip netns add router
#undo ip netns delete router
ip netns add client1
#undo ip netns delete client1
ip netns add client2
#undo ip netns delete client2

# Step 2: one veth pair per client, router end and client end
ip link add veth-r1 type veth peer name veth-c1
#undo ip link delete veth-r1
ip link add veth-r2 type veth peer name veth-c2
#undo ip link delete veth-r2

# Step 3: move the ends into their namespaces
ip link set veth-r1 netns router
ip link set veth-c1 netns client1
ip link set veth-r2 netns router
ip link set veth-c2 netns client2

# Step 4: addresses: the router gets .1 on each subnet, clients route via it
ip netns exec router ip addr add 10.0.1.1/24 dev veth-r1
#undo ip netns exec router ip addr del 10.0.1.1/24 dev veth-r1
ip netns exec router ip addr add 10.0.2.1/24 dev veth-r2
#undo ip netns exec router ip addr del 10.0.2.1/24 dev veth-r2
ip netns exec router ip link set veth-r1 up
ip netns exec router ip link set veth-r2 up
ip netns exec client1 ip addr add 10.0.1.100/24 dev veth-c1
#undo ip netns exec client1 ip addr del 10.0.1.100/24 dev veth-c1
ip netns exec client1 ip link set veth-c1 up
ip netns exec client1 ip link set lo up
ip netns exec client1 ip route add default via 10.0.1.1
#undo ip netns exec client1 ip route del default via 10.0.1.1
ip netns exec client2 ip addr add 10.0.2.100/24 dev veth-c2
#undo ip netns exec client2 ip addr del 10.0.2.100/24 dev veth-c2
ip netns exec client2 ip link set veth-c2 up
ip netns exec client2 ip link set lo up
ip netns exec client2 ip route add default via 10.0.2.1
#undo ip netns exec client2 ip route del default via 10.0.2.1

# Step 5: enable forwarding in the router namespace
ip netns exec router sysctl -w net.ipv4.ip_forward=1

# Step 6: test client1 <-> client2 through the router
ip netns exec client1 ping -c 3 10.0.2.100
ip netns exec client2 ping -c 3 10.0.1.100

# Step 7: show the topology, the router's routing table and client1's neighbour (ARP) table
# The topology now:
# client1 (10.0.1.100) <--[veth]--> router (10.0.1.1)
#                                   |
# client2 (10.0.2.100) <--[veth]--> router (10.0.2.1)
#observe
ip netns exec router ip route show
#observe
ip netns exec client1 ip neigh show
