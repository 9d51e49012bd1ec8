"""Teaching and seeing, apart from what a runtime execs: the tutorial lab (`tutorial`, with `kernel` for what
each step changed) and the live topology (`show`)."""
