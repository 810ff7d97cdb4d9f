from opsync.cli import main

raise SystemExit(main())
