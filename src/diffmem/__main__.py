"""`python -m diffmem ...` runs the `diffmem` command."""

from diffmem.cli import main

main()
