"""`python -m worker.cli`: the `provisioner` command."""

from worker.cli.main import main

main()
