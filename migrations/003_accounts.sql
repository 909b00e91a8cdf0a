-- 003_accounts: user accounts with Argon2id password hashes (PHC strings from app.password.hash).
-- Sessions keep naming users by name; names that logged in before accounts existed have no row
-- here and must sign up to log in again.

create table users (
  name          text        primary key check (name ~ '^[A-Za-z0-9_.-]{1,32}$'),
  password_hash text        not null check (password_hash like '$argon2%'),
  created_at    timestamptz not null default now()
);
