"""``python -m qcompile`` (and ``torchrun -m qcompile``)."""

from qcompile.cli import main

main()
