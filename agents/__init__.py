"""Stage agents: acquire, select, optimize, evaluate, refine, monitor."""
