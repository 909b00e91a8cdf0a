-- 001_init: the team board's schema (rooms, posts, reactions). Applied by `sluice migrate`.

create table rooms (
  id          bigserial primary key,
  title       text        not null check (char_length(title) between 1 and 100),
  description text        not null default '' check (char_length(description) <= 500),
  created_by  text        not null,
  created_at  timestamptz not null default now(),
  updated_at  timestamptz not null default now()
);

-- Titles are unique regardless of case: "Ops" and "ops" would confuse everyone.
create unique index rooms_title_key on rooms (lower(title));

create table posts (
  id         bigserial primary key,
  room_id    bigint      not null references rooms (id) on delete cascade,
  author     text        not null,
  body       text        not null check (char_length(body) between 1 and 2000),
  created_at timestamptz not null default now(),
  edited_at  timestamptz
);

-- The room page lists posts newest first, page by page (keyset on id).
create index posts_room_id_id on posts (room_id, id desc);

create table reactions (
  post_id    bigint      not null references posts (id) on delete cascade,
  user_name  text        not null,
  emoji      text        not null,
  -- clock_timestamp(), not now(): reactions are listed in the order they were made, even
  -- several within one transaction
  created_at timestamptz not null default clock_timestamp(),
  primary key (post_id, user_name, emoji)
);
