"""Reusable test infrastructure: a private RabbitMQ node, a TCP proxy, an OTLP receiver,
service subprocesses and browser fixtures. See README.md in this package."""
