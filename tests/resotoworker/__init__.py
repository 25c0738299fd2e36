"""Tests of the worker: config, handlers, the example cloud, and core + worker as real processes."""
