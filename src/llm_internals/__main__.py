import sys

from llm_internals.cli import main

sys.exit(main())
