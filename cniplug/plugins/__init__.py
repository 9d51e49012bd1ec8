"""One module per plugin type; each has a main() that the console scripts call."""

# The registry. Plugin type (the `type` in a network config) -> its module: HANDLERS (verb -> function),
# ABOUT, main(). Here, not in cli.py: the frozen runtime reads it on every call, and cli imports argparse.
PLUGINS = {
    "cniplug-bridge": "cniplug.plugins.bridge",
    "cniplug-ptp": "cniplug.plugins.ptp",
    "cniplug-loopback": "cniplug.plugins.loopback",
    "cniplug-host-local": "cniplug.plugins.host_local",
    "cniplug-static": "cniplug.plugins.static",
    "cniplug-firewall": "cniplug.plugins.firewall",
    "cniplug-tuning": "cniplug.plugins.tuning",
    "cniplug-bandwidth": "cniplug.plugins.bandwidth",
    "cniplug-portmap": "cniplug.plugins.portmap",
}
