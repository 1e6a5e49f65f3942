-- Run once by the postgres image when it creates the database (compose's scale profile): the vector
-- extension VITRINE_VECTOR_BACKEND=pgvector needs (docs/scaling.md section 4).
CREATE EXTENSION IF NOT EXISTS vector;
