"""The io_uring engine: connections opened, accepted and closed in batches of
submissions to a ring, one io_uring_enter() per batch (docs/probe.md, "Engines")."""
