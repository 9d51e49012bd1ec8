"""cniplug: CNI plugins whose every action is a readable ip/iptables/sysctl script."""

__version__ = "0.1.0"
