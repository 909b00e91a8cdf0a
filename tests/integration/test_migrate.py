"""test_migrate.py: `sluice migrate` against a real PostgreSQL (issue 18): no-transaction files
(CREATE INDEX CONCURRENTLY), checksums of applied files, `migrate status`, `migrate new`, migrate
without loading the handler scripts, and two instances migrating at once (advisory lock).

Needs DATABASE_URL (tools/test exports it; locally: export DATABASE_URL=$(tools/pg-dev start
/tmp/sluice-db 5433)) and psql. Each test works in a database of its own, dropped afterwards."""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from harness import SLUICE_BIN, check, run_tests, test, wait_for

DATABASE_URL = os.environ.get("DATABASE_URL")
if not DATABASE_URL:
    sys.exit("test_migrate.py: DATABASE_URL is not set; run under tools/test, or:\n"
             "  export DATABASE_URL=$(tools/pg-dev start /tmp/sluice-db 5433)")

BASE = DATABASE_URL.split("?")[0]


def psql(sql, url=BASE):
    r = subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-Atc", sql], capture_output=True, text=True, timeout=30)
    check(r.returncode == 0, "psql %r: %s" % (sql, r.stderr))
    return r.stdout.strip()


class Project:
    """A temp project (config.lua, a script, migrations/) with a database of its own."""

    def __init__(self, files, script='local app = require "sluice"\napp.get("/", function() return "x" end)\n'):
        self.dir = tempfile.mkdtemp(prefix="sluice-migrate-")
        self.db = "mig_%d_%d" % (os.getpid(), int(time.monotonic() * 1e6) % 10**9)
        psql("create database %s" % self.db)
        self.url = re.sub(r"/[^/]*$", "/" + self.db, BASE)
        os.mkdir(os.path.join(self.dir, "migrations"))
        os.mkdir(os.path.join(self.dir, "scripts"))
        with open(os.path.join(self.dir, "config.lua"), "w") as f:
            f.write('return { scripts = { "scripts/app.lua" }, workers = 1 }\n')
        with open(os.path.join(self.dir, "scripts", "app.lua"), "w") as f:
            f.write(script)
        for name, text in files.items():
            self.write(name, text)

    def write(self, name, text):
        with open(os.path.join(self.dir, "migrations", name), "w") as f:
            f.write(text)

    def sql(self, q):
        return psql(q, self.url)

    def cmd(self, *args, env_extra=None, url=True):
        env = dict(os.environ)
        env.pop("DATABASE_URL", None)
        if url:
            env["DATABASE_URL"] = self.url
        env.update(env_extra or {})
        return subprocess.run([SLUICE_BIN, "migrate", *args], cwd=self.dir, env=env,
                              capture_output=True, text=True, timeout=60)

    def popen(self, out):
        env = dict(os.environ, DATABASE_URL=self.url)
        return subprocess.Popen([SLUICE_BIN, "migrate"], cwd=self.dir, env=env, stdout=out, stderr=subprocess.STDOUT)

    def versions(self):
        out = self.sql("select version from schema_migrations order by version")
        return out.split("\n") if out else []

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)
        psql("drop database if exists %s with (force)" % self.db)


INIT = "create table items (id bigserial primary key, name text not null);\n"
CIC = "-- build the index without locking writers\n-- sluice:no-transaction\ncreate index concurrently items_name on items (name);\n"


@test
def no_transaction_file_runs_create_index_concurrently():
    p = Project({"001_init.sql": INIT, "002_index.sql": CIC.replace("-- sluice:no-transaction\n", "")})
    try:
        r = p.cmd()
        check(r.returncode == 1, "without the directive it fails: %d %s" % (r.returncode, r.stdout))
        check("002_index.sql:2: 25001: CREATE INDEX CONCURRENTLY cannot run inside a transaction block" in r.stderr, r.stderr)
        check("put `-- sluice:no-transaction` on a line of its own in 002_index.sql" in r.stderr, "says what to do: " + r.stderr)
        check(p.versions() == ["001_init.sql"], "002 not recorded: %r" % p.versions())
        p.write("002_index.sql", CIC)
        r = p.cmd()
        check(r.returncode == 0, r.stderr)
        check("applied  002_index.sql (1 statement, no transaction)" in r.stdout, r.stdout)
        check(p.sql("select indisvalid from pg_index where indexrelid = 'items_name'::regclass") == "t", "a valid index")
        check(p.versions() == ["001_init.sql", "002_index.sql"], "%r" % p.versions())
    finally:
        p.close()


@test
def failing_no_transaction_file_says_what_stays_applied():
    p = Project({"001_init.sql": INIT,
                 "002_two.sql": "-- sluice:no-transaction\ncreate table a (v int);\n\nselect * from nope;\n"})
    try:
        r = p.cmd()
        check(r.returncode == 1, r.stdout)
        check("002_two.sql:4: 42P01" in r.stderr and "the statements before line 4 stay applied" in r.stderr, r.stderr)
        check(p.sql("select count(*) from pg_tables where tablename = 'a'") == "1", "the first statement ran")
        check(p.versions() == ["001_init.sql"], "the file is not recorded: %r" % p.versions())
    finally:
        p.close()


@test
def edited_applied_file_is_refused_by_name():
    p = Project({"001_init.sql": INIT})
    try:
        check(p.cmd().returncode == 0, "first run")
        p.write("001_init.sql", INIT + "alter table items add column price int;\n")
        p.write("002_more.sql", "create table more (v int);\n")
        r = p.cmd()
        check(r.returncode == 1, "refused: " + r.stdout)
        check("migrations/001_init.sql was changed after it was applied on " in r.stderr, r.stderr)
        check("restore it" in r.stderr and "sluice migrate new NAME" in r.stderr, "says what to do: " + r.stderr)
        check(p.versions() == ["001_init.sql"], "nothing else ran: %r" % p.versions())
        s = p.cmd("status")
        check(s.returncode == 1 and re.search(r"^CHANGED  001_init\.sql ", s.stdout, re.M), "status shows it: " + s.stdout)
        p.write("001_init.sql", INIT)
        r = p.cmd()
        check(r.returncode == 0 and "applied  002_more.sql" in r.stdout, "restored: %s %s" % (r.stdout, r.stderr))
    finally:
        p.close()


@test
def status_lists_applied_and_pending():
    p = Project({"001_init.sql": INIT, "002_b.sql": "create table b (v int);\n"})
    try:
        s = p.cmd("status")
        check(s.returncode == 0, s.stderr)
        check(s.stdout.splitlines()[:2] == ["pending  001_init.sql", "pending  002_b.sql"], "before: " + s.stdout)
        check(p.cmd().returncode == 0, "apply")
        p.write("003_c.sql", CIC.replace("items_name", "c_idx"))
        s = p.cmd("status")
        lines = s.stdout.splitlines()
        check(re.match(r"^applied  001_init\.sql  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d$", lines[0]), s.stdout)
        check(re.match(r"^applied  002_b\.sql  ", lines[1]), s.stdout)
        check(lines[2] == "pending  003_c.sql  (no transaction)", s.stdout)
        check(lines[-1].startswith("migrations: 2 applied, 1 pending ("), s.stdout)
        os.remove(os.path.join(p.dir, "migrations", "002_b.sql"))
        s = p.cmd("status")
        check(re.search(r"^missing  002_b\.sql  applied .*, no such file in ", s.stdout, re.M), "a recorded file that is gone: " + s.stdout)
    finally:
        p.close()


@test
def migrate_new_creates_the_next_numbered_file():
    p = Project({"001_init.sql": INIT, "007_later.sql": "select 1;\n"})
    try:
        r = p.cmd("new", "Add users!", url=False)          # no database needed
        check(r.returncode == 0, r.stderr)
        path = os.path.join(p.dir, "migrations", "008_add_users.sql")
        check(r.stdout.strip() == "created %s" % path, r.stdout)
        with open(path) as f:
            text = f.read()
        check(text.startswith("-- 008_add_users.sql: Add users!\n") and "sluice:no-transaction" in text, text)
        r = p.cmd("new", "add users", url=False)
        check(r.returncode == 0 and "009_add_users.sql" in r.stdout, "the next one: " + r.stdout)
        r = p.cmd("new", url=False)
        check(r.returncode == 1 and "usage: sluice migrate new NAME" in r.stderr, r.stderr)
        fresh = tempfile.mkdtemp(prefix="sluice-migrate-new-")
        try:
            e = dict(os.environ)
            e.pop("DATABASE_URL", None)
            r = subprocess.run([SLUICE_BIN, "migrate", "new", "first"], cwd=fresh, env=e, capture_output=True, text=True, timeout=30)
            check(r.returncode == 0 and os.path.exists(os.path.join(fresh, "migrations", "001_first.sql")),
                  "no config, no migrations/ yet: %s %s" % (r.stdout, r.stderr))
        finally:
            shutil.rmtree(fresh)
        check(p.cmd().returncode == 0 and "008_add_users.sql" in p.versions(), "the new file applies (comments only)")
    finally:
        p.close()


@test
def migrate_does_not_load_the_handler_scripts():
    p = Project({"001_init.sql": INIT}, script='local app = require "sluice"\nlocal cfg = require "not_written_yet"\n')
    try:
        e = dict(os.environ, DATABASE_URL=p.url)
        r = subprocess.run([SLUICE_BIN, "check"], cwd=p.dir, env=e, capture_output=True, text=True, timeout=30)
        check(r.returncode == 1 and "not_written_yet" in r.stderr, "the scripts do not load: " + r.stderr)
        r = p.cmd()
        check(r.returncode == 0 and "applied  001_init.sql" in r.stdout, "migrate still works: %s %s" % (r.stdout, r.stderr))
    finally:
        p.close()


@test
def connection_limit_one_is_refused_clearly():
    p = Project({"001_init.sql": INIT})
    try:
        r = p.cmd(env_extra={"DATABASE_URL": p.url + "?connection_limit=1"})
        check(r.returncode == 1 and "needs connection_limit of at least 2" in r.stderr, r.stderr)
        check(p.cmd(env_extra={"DATABASE_URL": p.url + "?connection_limit=2"}).returncode == 0, "2 is enough")
    finally:
        p.close()


@test
def older_schema_migrations_table_gets_checksums():
    p = Project({"001_init.sql": INIT})
    try:
        p.sql(INIT + "create table schema_migrations (version text primary key, applied_at timestamptz not null default now());"
              "insert into schema_migrations (version) values ('001_init.sql');")
        r = p.cmd()
        check(r.returncode == 0 and "0 applied, 1 already up to date" in r.stdout, r.stdout + r.stderr)
        check(len(p.sql("select checksum from schema_migrations")) == 32, "checksum filled in")
    finally:
        p.close()


@test
def two_instances_migrate_at_once():
    files = {"001_init.sql": INIT, "002_index.sql": CIC,
             "003_data.sql": "insert into items (name) select 'n' || g from generate_series(1, 100) g;\n"}
    p = Project(files)
    holder = None
    outs = []
    try:
        # a third party holds the lock: both instances must wait, then apply every file exactly once
        holder = subprocess.Popen(["psql", p.url, "-Atq"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        holder.stdin.write("select pg_advisory_lock(7310519);\n")
        holder.stdin.flush()
        wait_for(lambda: p.sql("select count(*) from pg_locks where locktype = 'advisory' and objid = 7310519 and granted") == "1",
                 timeout=20, what="the third party holding the lock")
        procs = []
        for i in range(2):
            f = open(os.path.join(p.dir, "out%d" % i), "w+")
            outs.append(f)
            procs.append(p.popen(f))

        def both_waiting():
            return all("waiting for another sluice migrate" in open(f.name).read() for f in outs)
        wait_for(both_waiting, timeout=30, what="both instances waiting for the lock")
        check(p.sql("select count(*) from pg_tables where tablename = 'items'") == "0", "nothing ran while the lock was held")
        holder.stdin.write("select pg_advisory_unlock_all();\n")
        holder.stdin.flush()
        for pr in procs:
            check(pr.wait(timeout=60) == 0, "an instance failed: " + "".join(open(f.name).read() for f in outs))
        text = "".join(open(f.name).read() for f in outs)
        for name in files:
            check(text.count("applied  %s" % name) == 1, "%s applied exactly once:\n%s" % (name, text))
        check(p.versions() == sorted(files), "%r" % p.versions())
        check(p.sql("select count(*) from items") == "100", "the data file ran once")
    finally:
        if holder:
            holder.stdin.close()
            holder.wait(timeout=10)
        for f in outs:
            f.close()
        p.close()


if __name__ == "__main__":
    run_tests()
