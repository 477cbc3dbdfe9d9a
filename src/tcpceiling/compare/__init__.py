"""`tcpceiling compare-io`: a thread per connection against one event loop, each
model run as a probe with the thread or epoll sink, compared in memory, setup time
and CPU."""
