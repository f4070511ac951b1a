"""Per-system benchmark adapters and what the orchestrator knows about them."""
