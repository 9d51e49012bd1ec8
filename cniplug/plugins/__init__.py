"""One module per plugin type; each has a main() that the console scripts call."""
