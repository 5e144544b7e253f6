"""`agentswarm swarm` (what `make swarm` runs) on a Postgres whose DATABASE_URL is the superuser and where no
Redis runs yet: every process connects as the swarm's own role and to a Redis that wants a password, the run
lands its features, and no password shows in the output, supervisord's config or a process's environment.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from agentswarm.config import load_settings
from agentswarm.credentials import read_secret
from agentswarm.db import Feature, session_scope
from tests.e2e.conftest import FEATURES
from tests.e2e.test_make_swarm import Swarm
from tests.ops.test_secured_services import spare_redis  # noqa: F401  (the fixture)
from tests.support.private_pg import private_pg  # noqa: F401  (the fixture)
from tests.support.waiting import wait_for


def test_make_swarm_runs_as_its_own_role_on_a_redis_with_a_password(private_pg, spare_redis, tmp_path):  # noqa: F811
    url = private_pg.create_database("swarm_whole")
    redis_url, secrets_dir = spare_redis
    swarm = Swarm(tmp_path, DATABASE_URL=url, REDIS_URL=redis_url, DATABASE_OWN_ROLE="true",
                  SERVICE_SECRETS_DIR=str(secrets_dir))
    try:
        role_file = secrets_dir / "postgres-swarm_whole.json"
        wait_for(lambda: swarm.alive() or (role_file.exists() and len(list(secrets_dir.glob("*.json"))) == 2),
                 timeout=120, every=0.5)
        role_url = load_settings(database_url=url, database_own_role=True, service_secrets_dir=secrets_dir).database_url

        def done() -> bool:
            swarm.alive()
            try:
                with session_scope(role_url) as s:
                    return s.scalar(select(func.count()).where(Feature.status == "done")) == len(FEATURES)
            except DBAPIError:  # not migrated yet
                return False

        wait_for(done, timeout=300, every=1.0)
        with psycopg.connect(role_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
            users = {r[0] for r in conn.execute("select distinct usename from pg_stat_activity "
                                                "where datname = 'swarm_whole'")}
        assert users == {"swarm_whole"}, users  # beat, the workers, the dashboard, the listener: all the role
        passwords = [str((read_secret(p) or {})["password"]) for p in secrets_dir.glob("*.json")]
        environ = Path(f"/proc/{swarm.pid('work')}/environ").read_bytes().decode(errors="replace")
        conf = swarm.conf().read_text()
        for password in passwords:
            assert password not in environ and password not in conf
    finally:
        swarm.stop()
    text = swarm.text()
    assert "postgres role: the swarm connects as swarm_whole (not a superuser" in text
    assert "redis: started, requiring a password" in text
    assert not any(password in text for password in passwords)
