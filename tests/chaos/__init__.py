"""Chaos: the full stack as real processes, killed with SIGKILL at random moments, then audited."""
