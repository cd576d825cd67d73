"""The HTTP API's version, in one place: the server's routes and the CLI's requests use it.

Standard library only (nothing of the server side), so the CLI may import it.
"""

API_VERSION = "v1"
#: every versioned route starts with this
API_PREFIX = f"/{API_VERSION}"
