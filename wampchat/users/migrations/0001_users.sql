-- Just-in-time users (SPEC §4): one row per Keycloak account, created at first login.
CREATE TABLE users (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    keycloak_id   text NOT NULL,
    email         text,
    username      text,
    roles         text[] NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_login_at timestamptz,
    CONSTRAINT users_keycloak_id_key UNIQUE (keycloak_id),
    CONSTRAINT users_email_key UNIQUE (email)
);
