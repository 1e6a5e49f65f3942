"""The pgvector vector backend (VITRINE_VECTOR_BACKEND=pgvector): the vectors in the catalog's PostgreSQL."""
