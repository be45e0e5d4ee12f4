"""Applying a plan: the executor that visits its steps in dependency order (executor.py), and one
apply of a project from lock to read-back (session.py), which the command line and the daemon share."""
