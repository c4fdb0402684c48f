from smoke.flow import main

raise SystemExit(main())
