"""The node side of a cluster: the node agent (`cniplug node`), the sources of cluster state, the simulation."""
