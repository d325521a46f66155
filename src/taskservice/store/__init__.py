"""PostgreSQL access. All SQL of the service lives in this package."""
