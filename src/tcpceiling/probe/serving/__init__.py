"""What a real server does to each connection, and why it stopped serving: the
service checks and their wire formats, the per-connection watch and its verdicts,
the server's own evidence and the attribution of a stop. A change to how a server's
answer is judged or a stop is named lands here."""
