#!/bin/bash
# The tutorial's example 1: its commands as written (its echo lines become these comments),
# rendered by cniplug from the macros its plugins use. Like the tutorial's scripts it has no `set -e`.
# An `#undo` line says how `cniplug tutorial 1 --run` takes the step above it back (with this
# host's values at printing time); bash reads it as a comment.

# Clean up what an earlier run may have left (safe: errors are hidden)
ip netns delete ns1 2>/dev/null
ip netns delete ns2 2>/dev/null
ip link delete veth0 2>/dev/null

# Step 1: create two network namespaces, one per simulated container
ip netns add ns1
#undo ip netns delete ns1
ip netns add ns2
#undo ip netns delete ns2

# Step 2: create a veth pair; veth0 and veth1 are connected from birth
ip link add veth0 type veth peer name veth1
#undo ip link delete veth0

# Step 3: move each end into its namespace
ip link set veth0 netns ns1
ip link set veth1 netns ns2

# Step 4: configure addresses and bring the interfaces up
ip netns exec ns1 ip addr add 192.168.1.1/24 dev veth0
#undo ip netns exec ns1 ip addr del 192.168.1.1/24 dev veth0
ip netns exec ns1 ip link set veth0 up
ip netns exec ns1 ip link set lo up
ip netns exec ns2 ip addr add 192.168.1.2/24 dev veth1
#undo ip netns exec ns2 ip addr del 192.168.1.2/24 dev veth1
ip netns exec ns2 ip link set veth1 up
ip netns exec ns2 ip link set lo up

# Step 5: test connectivity between the namespaces
ip netns exec ns1 ping -c 3 192.168.1.2
ip netns exec ns2 ping -c 3 192.168.1.1

# Step 6: show the devices in detail: `veth0@ifN` names the peer's interface index, `link-netns` its namespace
#observe
ip netns exec ns1 ip -d link show
#observe
ip netns exec ns2 ip -d link show
#observe
ip netns exec ns1 ethtool -S veth0
# ethtool is often not installed; `ip -d link show` shows the same peer index (`@ifN`) and its namespace
#observe
ip netns exec ns1 ip -d link show veth0
