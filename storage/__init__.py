"""Durable sessions: checkpointers, event log, artifact store."""
