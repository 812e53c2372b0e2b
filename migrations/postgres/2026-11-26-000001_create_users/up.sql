CREATE TYPE mood AS ENUM ('happy', 'sad', 'curious');

CREATE TABLE users (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    email TEXT NOT NULL UNIQUE,
    mood mood NOT NULL DEFAULT 'curious',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE SEQUENCE tickets;
