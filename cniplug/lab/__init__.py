"""Teaching and seeing: tools that show what the plugins (and the tutorial) build. `show`: the live topology."""
