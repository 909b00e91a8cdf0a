-- 002_sessions: browser logins (POST /api/login sets a cookie naming a row here).
-- Kept in PostgreSQL so every worker and every instance sees the same sessions.

create table sessions (
  id         text        primary key,           -- 32 hex characters from /dev/urandom
  user_name  text        not null,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null
);

create index sessions_expires_at on sessions (expires_at);
