"""`python -m cnnlab.cli`: what torchrun starts for data-parallel training."""

from cnnlab.cli import main

main()
