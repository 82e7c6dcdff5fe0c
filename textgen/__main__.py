"""`python -m textgen {train,eval,models,generate} --help`: the command line (textgen/cli.py)."""

from textgen.cli import main

raise SystemExit(main())
