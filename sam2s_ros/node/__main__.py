"""``python -m sam2s_ros.node``: run sam2s_node."""

from sam2s_ros.node import main

raise SystemExit(main())
