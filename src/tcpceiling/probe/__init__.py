"""Proof: open real connections until a target, a limit or a guard, sharded over
worker processes, and measure what each connection cost.

Four rooms, each owning one concern:

- `run/`: the run as a whole: its options (config), its plan (shards, ports,
  sources, the prediction), the coordinator and its phases (open, measure, hold,
  release), the guards (duration, memory, signals), what it measures (Slab, RSS,
  CPU), the server's side read before and after, and the result it returns
  (outcome, result); with it, the run across many hosts (hosts) and the sink alone
  (serve).
- `workers/`: the processes that open and hold connections (client, sink), how they
  are forked, heard and ended (procs, children), the typed messages they send
  (messages), and what a worker does alone: the opening's pace (pacing), the
  frontier after a refusal (frontier), traffic (active), latency (histogram).
- `serving/`: what a real server does to each connection and why it stopped
  serving: the checks and their wire formats (checks, protocols and the protocols'
  own modules), the per-connection state machine (watch) and its verdicts (streak),
  the server's evidence and the stop's attribution (evidence, attribution), a
  proxy's side (upstream).
- `uring/`: the io_uring engine, with no library: the ring (ring), which engine a
  worker runs on and why (engine), the fast path's batches (connect), the sink's
  multishot accepts (accept) and rate's cycles (churn).

`tcpceiling rate` and `tcpceiling compare-io` are packages of their own beside this
one (tcpceiling.rate, tcpceiling.compare), using the workers and the run's pieces
through their modules here.
"""
