"""`python -m jobyard.cli`: the same command as the `jobyard` console script."""

from jobyard.cli import main

main()
