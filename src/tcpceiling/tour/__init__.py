"""`tcpceiling tour`: the classic answer to "how many TCP connections can a machine
hold?" replayed on this machine, each step predicted by analyze and then proven by
real connections, in network namespaces and cgroups of the tour's own.

The walk, in the order it is usually told: the 4-tuple and ephemeral ports
(`ports`), file descriptors at three levels (`fds`), a thread per connection against
one event loop and the task limit (`threads`), memory in a cgroup (`memory`), CPU per
message (`cpu`), then capacity against rate (`rate`); `run.tour` runs them and
`table.resources` draws the one-table summary from what the steps observed.
"""
