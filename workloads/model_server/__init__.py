"""The model server's runtime code (runs in the serving image, not the Pulumi program): load gate, TLS launcher
for MLServer, prediction audit log. Imports only what the serving environment has (requirements.txt)."""
