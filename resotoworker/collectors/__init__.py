"""The collectors that ship with the worker: example (a simulated cloud) and aws."""
