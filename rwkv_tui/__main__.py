from rwkv_tui.cli import main

raise SystemExit(main())
