"""``python -m cli``: the same as the ``trapbatch`` command."""
import sys

from cli.main import main

sys.exit(main())
