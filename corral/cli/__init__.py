"""The ``corral`` command. Talks to the server over HTTP only (``OLLAMA_HOST``)."""
