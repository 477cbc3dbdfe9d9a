"""Servers whose own connection limit tcpceiling knows: one module per server, an
explicit registry (registry.py), nothing guessed. Each module recognises its
processes, reads the limit the server is running with (from the server itself where
it can say, else its command line and configuration, and says which), counts what
it holds, and knows its symptom, its fix and its probe check."""
