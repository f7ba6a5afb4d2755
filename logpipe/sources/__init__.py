"""Where logs come from: the Docker Engine API."""
