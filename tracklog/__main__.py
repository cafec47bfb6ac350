"""`python -m tracklog` runs the command-line interface."""

from tracklog.cli import main

main()
