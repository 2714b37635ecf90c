"""Local mode: the platform's servers (registry database, MLflow, Redis, feature server, model server) run on this
machine, on loopback, with TLS and authentication as in the stacks. Used by the tests and by `./dev.sh demo`."""
