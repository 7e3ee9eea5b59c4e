"""Request validation (pydantic models) and the OpenAPI document, both read from the Endpoint declarations."""
