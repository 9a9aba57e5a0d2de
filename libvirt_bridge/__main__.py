from libvirt_bridge.cli import main

raise SystemExit(main())
