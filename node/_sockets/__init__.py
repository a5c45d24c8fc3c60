"""The socket thread and the socket verbs of the Service API."""
