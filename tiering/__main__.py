from tiering.cli import entry

entry()
