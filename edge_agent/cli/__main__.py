"""``python -m edge_agent.cli``: the command line (how the agent runs a calibration in a child process)."""

from edge_agent.cli import main

raise SystemExit(main())
