"""`tcpceiling tune`: from the ceiling to the settings that reach a target.

model.py (the plan's data), raisers.py and ports.py (how each limit is raised,
one function per constraint), planner.py (the rounds over the what-if model),
files.py (sysctl.d, limits.d, systemd, docker, Kubernetes), apply.py (write under
a root and put back), run.py (the steps the CLI calls)."""
