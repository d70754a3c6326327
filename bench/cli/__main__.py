"""`python -m bench.cli`: the optbench command."""
import sys

from bench.cli import main

sys.exit(main())
