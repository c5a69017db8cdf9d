"""`python -m cli ...`: the `autodidact` command."""

from cli.app import main

main()
