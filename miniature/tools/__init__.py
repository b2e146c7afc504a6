"""Tools built on the core: the command line, the demo, compression and tiny test models."""
