"""HTTP layer: request schemas and routes. Never touches a model directly."""
