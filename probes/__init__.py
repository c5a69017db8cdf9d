"""Hallucination-risk probes on a model's own prefill hidden states."""
