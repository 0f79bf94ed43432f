from desktop_proxy.entry import main

raise SystemExit(main())
