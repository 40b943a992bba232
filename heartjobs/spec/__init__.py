"""Formats: job specs (their schema, the defaults they resolve against, their identity and hash) and sweep
files that expand into them."""
