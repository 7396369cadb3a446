"""python -m nnx_ref: see cli.py."""
import sys

from .cli import main

sys.exit(main())
