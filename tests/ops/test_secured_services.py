"""Defence in depth for the services: the swarm's own Postgres role, a Redis that wants its password, and the
doctor's warnings where the services are open to every local process.

Real servers only: a private Postgres (trust auth, then scram) and private redis-servers on spare ports; the
shared ones are only read (the doctor's probes of the session's Redis).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import redis

from agentswarm.config import load_settings
from agentswarm.credentials import read_secret, redis_file
from agentswarm.db.migrate import upgrade
from agentswarm.errors import ConfigError, ServiceUnavailable
from agentswarm.ops.db_role import ensure_swarm_role
from agentswarm.ops.doctor import Ladder, exposure, services
from agentswarm.ops.services import check_redis_password, ensure_redis
from tests.support.env import ROOT, TEST_REDIS_URL
from tests.support.private_pg import private_pg  # noqa: F401  (the fixture)

COPY_TO_PROGRAM = "copy (select 1) to program 'cat > /dev/null'"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_steps(settings, *checks) -> tuple[Ladder, list[str]]:
    lines: list[str] = []
    with Ladder(settings, lines.append) as ladder:
        for check in checks:
            check(ladder)
    return ladder, lines


def line_of(lines: list[str], name: str) -> str:
    return next(ln for ln in lines if ln[2:].startswith(name + " "))


@pytest.fixture
def spare_redis(tmp_path):
    """(REDIS_URL without a password at a spare port where nothing runs yet, the secrets dir); any redis-server
    started there is shut down at the end (with the password kept for it)."""
    port = free_port()
    secrets_dir = tmp_path / "secrets"
    yield f"redis://127.0.0.1:{port}/0", secrets_dir
    password = (read_secret(redis_file(secrets_dir, port)) or {}).get("password")
    client = redis.Redis(port=port, password=password, socket_connect_timeout=2)
    with contextlib.suppress(redis.RedisError):
        client.shutdown(nosave=True)
    client.close()


@pytest.fixture
def admin_db(private_pg):  # noqa: F811
    """A database on the private server (trust auth), migrated by its superuser to 0004 only."""
    url = private_pg.create_database("swarm_own")
    upgrade(url, "0004")
    return url


def swarm_settings(url: str, tmp_path: Path, **extra):
    return load_settings(database_url=url, database_own_role=True, service_secrets_dir=tmp_path / "secrets", **extra)


def test_the_swarms_role_is_no_superuser_yet_migrates_and_writes_but_cannot_run_programs(admin_db, tmp_path):
    admin = admin_db.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:  # what the swarm could do as DATABASE_URL's superuser
        conn.execute(COPY_TO_PROGRAM)
    line = ensure_swarm_role(swarm_settings(admin_db, tmp_path))
    settings = swarm_settings(admin_db, tmp_path)  # what every process reads from now on
    data = read_secret(tmp_path / "secrets" / "postgres-swarm_own.json")
    assert data and data["role"] == "swarm_own" and data["password"] not in line
    assert line == f"the swarm connects as swarm_own (not a superuser; its password is in {tmp_path}/secrets/" \
                   "postgres-swarm_own.json)"
    assert stat.S_IMODE((tmp_path / "secrets" / "postgres-swarm_own.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "secrets").stat().st_mode) == 0o700
    assert settings.database_url.startswith("postgresql+psycopg://swarm_own:") and settings.database_admin_url == admin_db
    assert data["password"] in settings.secrets()

    upgrade(settings.database_url)  # the migrations after 0004, as the role, on the tables the superuser made
    swarm = settings.database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(swarm, autocommit=True) as conn:
        row = conn.execute("select current_user, rolsuper, rolcreaterole, rolcreatedb from pg_roles "
                           "where rolname = current_user").fetchone()
        assert row == ("swarm_own", False, False, False)
        conn.execute("insert into events (kind, message, data, created_at) values ('probe', 'x', '{}', now())")
        assert conn.execute("select count(*) from events").fetchone() == (1,)
        assert conn.execute("select version_num from alembic_version").fetchone() == ("0008",)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(COPY_TO_PROGRAM)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("create role swarm_escape login superuser")

    again = ensure_swarm_role(swarm_settings(admin_db, tmp_path))  # prepare twice: same role, same password
    assert again == line and read_secret(tmp_path / "secrets" / "postgres-swarm_own.json") == data
    with psycopg.connect(swarm) as conn:
        assert conn.execute("select current_user").fetchone() == ("swarm_own",)


def test_doctor_warns_when_postgres_trusts_local_clients_and_the_swarm_is_a_superuser(admin_db, tmp_path):
    settings = load_settings(database_url=admin_db, database_own_role=False)
    ladder, lines = run_steps(settings, services.check_postgres, exposure.check_postgres_auth,
                              exposure.check_postgres_role)
    auth, role = line_of(lines, "postgres auth"), line_of(lines, "postgres role")
    assert auth.startswith("– postgres auth") and "lets postgres in without a password (trust auth)" in auth
    assert "→ fix: set scram-sha-256 on pg_hba.conf's host and local lines" in auth
    assert "docs/securing-services.md" in auth
    assert role.startswith("– postgres role") and "connects as postgres, which is a superuser" in role
    assert "→ fix: run `agentswarm prepare`" in role and "docs/securing-services.md" in role
    assert ladder.passed and "2 warnings" in ladder.summary()  # a warning does not hold a run


def test_doctor_is_content_with_scram_auth_and_the_swarms_role(private_pg, admin_db, tmp_path):  # noqa: F811
    ensure_swarm_role(swarm_settings(admin_db, tmp_path))
    sock = private_pg.data.parent  # the superuser keeps trust on the server's own socket only
    (private_pg.data / "pg_hba.conf").write_text("local all postgres trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
                                                 "host all all ::1/128 scram-sha-256\n")
    subprocess.run(private_pg.ctl_command("reload"), check=True, capture_output=True, timeout=60)
    with psycopg.connect(host=str(sock), port=private_pg.port, user="postgres", dbname="swarm_own") as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    ladder, lines = run_steps(swarm_settings(admin_db, tmp_path), services.check_postgres,
                              exposure.check_postgres_auth, exposure.check_postgres_role)
    assert lines[1].startswith("✓ postgres auth") and "asks swarm_own and postgres for a password" in lines[1], lines
    assert lines[2].startswith("✓ postgres role") and "the swarm connects as swarm_own (not a superuser)" in lines[2]
    assert ladder.passed and "warning" not in ladder.summary()
    password = str((read_secret(tmp_path / "secrets" / "postgres-swarm_own.json") or {})["password"])
    assert not any(password in line for line in lines)


def test_a_redis_started_by_the_swarm_refuses_clients_without_its_password(spare_redis, celery_worker, tmp_path):
    url, secrets_dir = spare_redis
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    how = ensure_redis(url, secrets_dir)
    password = str((read_secret(redis_file(secrets_dir, port)) or {})["password"])
    assert how == f"started, requiring a password (kept in {redis_file(secrets_dir, port)})" and password not in how
    assert stat.S_IMODE(redis_file(secrets_dir, port).stat().st_mode) == 0o600
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=port, socket_connect_timeout=5).ping()
    settings = load_settings(redis_url=url, service_secrets_dir=secrets_dir)
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5)
    assert client.ping() and password in settings.secrets()
    server_pid = int(client.info("server")["process_id"])
    title = Path(f"/proc/{server_pid}/cmdline").read_text().replace("\0", " ").strip()
    assert password not in title and title == f"redis-server 127.0.0.1:{port}"  # what `ps` shows
    assert ensure_redis(url, secrets_dir) == "running" and redis_file(secrets_dir, port).exists()

    # A real Celery worker reads REDIS_URL without the password, connects with it (it is ready only once its
    # broker answered), and never prints it.
    worker = celery_worker(queues="secured", env={"REDIS_URL": url, "SERVICE_SECRETS_DIR": str(secrets_dir)})
    assert f"redis://:**@127.0.0.1:{port}/0" in worker.log() and password not in worker.log()

    # Flower, started as the Procfile starts it, shows the broker without the password.
    log = tmp_path / "flower.log"
    with open(log, "wb") as out:
        flower = subprocess.Popen([sys.executable, "-m", "celery", "-A", "agentswarm.queue.app", "flower",
                                   f"--port={free_port()}", "--address=127.0.0.1"], cwd=ROOT, stdout=out,
                                  stderr=subprocess.STDOUT,
                                  env={**os.environ, "REDIS_URL": url, "SERVICE_SECRETS_DIR": str(secrets_dir)})
    deadline = time.monotonic() + 120
    while "Broker:" not in log.read_text() and flower.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    flower.terminate()
    flower.wait(timeout=30)
    seen = log.read_text()
    assert f"Broker: redis://:**@127.0.0.1:{port}/0" in seen and password not in seen, seen

    ladder, lines = run_steps(settings, services.check_redis, exposure.check_redis_auth)
    assert lines[1].startswith("✓ redis auth") and "refuses clients without a password" in lines[1]
    assert not any(password in line for line in lines)
    client.close()

    # `make clean` removed var/ while that Redis runs: prepare stops with what to do, not a NOAUTH traceback.
    kept = redis_file(secrets_dir, port).read_bytes()
    redis_file(secrets_dir, port).unlink()
    with pytest.raises(ServiceUnavailable) as err:
        check_redis_password(load_settings(redis_url=url, service_secrets_dir=secrets_dir).redis_url, secrets_dir)
    assert f"the Redis at 127.0.0.1:{port} wants a password REDIS_URL does not carry" in str(err.value)
    assert f"pgrep -af 'redis-server 127.0.0.1:{port}'" in str(err.value)
    redis_file(secrets_dir, port).write_bytes(kept)  # for the fixture's shutdown


def test_doctor_warns_for_a_redis_without_a_password(redis_client):
    ladder, lines = run_steps(load_settings(redis_url=TEST_REDIS_URL), services.check_redis, exposure.check_redis_auth)
    assert lines[1].startswith("– redis auth") and "127.0.0.1:6379 answers without a password" in lines[1]
    assert "→ fix: set requirepass (or an ACL user) and put the password in REDIS_URL" in lines[1]
    assert "docs/securing-services.md" in lines[1] and ladder.passed


def test_prepare_gives_the_swarm_its_role_and_a_redis_with_a_password_and_prints_neither(
        private_pg, spare_redis, tmp_path):  # noqa: F811
    url = private_pg.create_database("swarm_prepared")
    redis_url, secrets_dir = spare_redis
    env = {**os.environ, "DATABASE_URL": url, "REDIS_URL": redis_url, "DATABASE_OWN_ROLE": "true",
           "SERVICE_SECRETS_DIR": str(secrets_dir), "HUB_PATH": str(tmp_path / "hub.git"),
           "SANDBOX_ROOT": str(tmp_path / "sb"), "SANDBOX_ISOLATION": "none"}
    out = subprocess.run([sys.executable, "-m", "agentswarm", "prepare"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r"^redis: started, requiring a password \(kept in .*/redis-\d+\.json\)$", out.stdout, re.M)
    assert re.search(r"^postgres role: the swarm connects as swarm_prepared \(not a superuser", out.stdout, re.M)
    assert re.search(r"^run \w+ active$", out.stdout, re.M)  # its first check was sent with the password
    passwords = [str((read_secret(p) or {})["password"]) for p in sorted(secrets_dir.iterdir())]
    assert len(passwords) == 2 and not any(p in out.stdout + out.stderr for p in passwords)
    whoami = ("from sqlalchemy import text; from agentswarm.db.session import session_scope\n"
              "with session_scope() as db: print(db.execute(text('select current_user')).scalar())")
    ran = subprocess.run([sys.executable, "-c", whoami], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60)
    assert ran.stdout.strip() == "swarm_prepared", ran.stdout + ran.stderr  # any later process of the swarm
    admin = private_pg.admin_url.rsplit("/", 1)[0] + "/swarm_prepared"
    with psycopg.connect(admin) as conn:
        owners = {r[0] for r in conn.execute("select tableowner from pg_tables where schemaname = 'public'")}
        assert owners == {"swarm_prepared"}
        assert conn.execute("select count(*) from runs where status = 'active'").fetchone() == (1,)


def test_a_database_url_that_is_not_a_superuser_is_used_as_given_and_a_clash_is_one_line(admin_db, tmp_path):
    admin = admin_db.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("create role plain login")
    plain = admin_db.replace("//postgres@", "//plain@")
    assert ensure_swarm_role(swarm_settings(plain, tmp_path)) == \
        "the swarm connects as plain, DATABASE_URL's user (not a superuser)"
    assert not (tmp_path / "secrets").exists() and swarm_settings(plain, tmp_path).database_url == plain
    with pytest.raises(ConfigError) as err:
        ensure_swarm_role(swarm_settings(admin_db, tmp_path, database_role="postgres"))
    assert str(err.value).startswith("DATABASE_ROLE: the swarm's role would be 'postgres', DATABASE_URL's own user")
    assert ensure_swarm_role(load_settings(database_url=admin_db, database_own_role=False)).endswith(
        "(DATABASE_OWN_ROLE=false)")
