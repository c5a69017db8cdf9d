"""The improvement session's wiring: state, policy, graph, session runner."""
