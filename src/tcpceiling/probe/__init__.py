"""Proof: open real connections until a target, a limit or a guard, sharded over
worker processes, and measure what each connection cost."""
