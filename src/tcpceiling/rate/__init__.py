"""`tcpceiling rate`: new connections per second and what stops the rate. Cycles of
connect -> close against a sink of its own or a real server, paced or as fast as
the workers go; the limit named from the evidence. Uses the probe's workers
(children, procs) and run pieces (isolate, measure, config) through their modules."""
