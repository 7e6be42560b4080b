"""`python -m pc3d` (what torchrun launches) behaves exactly like the `pc3d` command."""

from pc3d.cli import entry

entry()
