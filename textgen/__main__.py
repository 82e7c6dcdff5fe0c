from textgen.cli import main

raise SystemExit(main())
