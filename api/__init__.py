"""The edges that start and inspect tasks: the HTTP API and the blob-drop trigger (durable clients)."""
