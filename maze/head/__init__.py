"""The head: embedded NATS, run controller and placer, projector and API in one process."""
