from azproxy.cli import main

raise SystemExit(main())
