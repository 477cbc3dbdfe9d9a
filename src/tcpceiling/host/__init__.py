"""Reading the machine: pure parsers (parse), file readers rooted at a path (read),
the socket table from netlink sock_diag (sockets) and network namespaces (netns)."""
