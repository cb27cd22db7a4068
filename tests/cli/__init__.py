"""The command line: every command against real stores, output and exit codes."""
