"""Idempotency-Key middleware for Starlette and FastAPI on the idempotency
PostgreSQL extension.  See README.md."""

from .middleware import Idempotency, IdempotencyMiddleware, idempotent, idempotent_connection

__all__ = ["IdempotencyMiddleware", "Idempotency", "idempotent", "idempotent_connection"]
