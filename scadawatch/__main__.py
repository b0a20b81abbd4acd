from scadawatch.cli import main

raise SystemExit(main())
