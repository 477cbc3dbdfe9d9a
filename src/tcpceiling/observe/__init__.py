"""Seeing the ceiling coming on a running host: `watch`, `doctor` and `exporter`.

sample.py reads one Sample (processes holding TCP sockets, listeners, ports per
destination, host-wide limits, counters, analyze's ceilings); usage.py turns it into
Usage rows (used of allowed, headroom, fix) and rates; kmsg.py reads the kernel's
words; doctor.py diagnoses; exporter.py speaks Prometheus."""
