"""Use cases between the thin API routers and the store: authorization, validation, audit."""
