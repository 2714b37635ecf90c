"""The client-database bootstrap script (`workloads.model_registry.bootstrap_sql`, run by the Job with psql) against a
real PostgreSQL over verified TLS: as a superuser admin (on-prem StatefulSet) and as a CREATEROLE/CREATEDB admin that
is not a superuser (the RDS master user's shape); twice, so it is idempotent and converges on a rotated password."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess

import pytest

from workloads.model_registry import bootstrap_sql

pytestmark = pytest.mark.slow


def _psql(pg, user: str, password: str, sql_file, client_password: str, database: str):
    if shutil.which("psql") is None:
        pytest.skip("psql (Debian's postgresql-client) is not installed")
    env = {**os.environ, "PGHOST": pg.host, "PGPORT": str(pg.port), "PGDATABASE": database, "PGUSER": user,
           "PGPASSWORD": password, "PGSSLMODE": "verify-full", "PGSSLROOTCERT": str(pg.ca.bundle),
           "FINML_DB_PASSWORD": client_password}
    return subprocess.run(["psql", "--no-psqlrc", "--quiet", "--file", str(sql_file)], env=env, capture_output=True,
                          text=True, timeout=60)


def _connect(pg, user: str, password: str, database: str):
    import psycopg

    return psycopg.connect(host=pg.host, port=pg.port, user=user, password=password, dbname=database,
                           sslmode="verify-full", sslrootcert=str(pg.ca.bundle), autocommit=True)


@pytest.mark.parametrize("admin_kind", ["superuser", "createrole"])
def test_bootstrap_creates_an_isolated_role_and_database_idempotently(postgres, tmp_path, admin_kind):
    import psycopg

    tag = secrets.token_hex(3)
    role, database, admin_db = f"feast_{tag}", f"feast_registry_{tag}", f"mlflow_{tag}"
    if admin_kind == "superuser":
        from finml.local.postgres import ADMIN_USER

        admin, admin_password = ADMIN_USER, postgres.admin_password
        with postgres.admin_connect() as conn:
            conn.execute(f"CREATE DATABASE {admin_db}")
    else:
        admin, admin_password = f"rdsmaster_{tag}", secrets.token_urlsafe(16)
        with postgres.admin_connect() as conn:
            conn.execute(f"CREATE ROLE {admin} LOGIN CREATEROLE CREATEDB PASSWORD '{admin_password}'")
            conn.execute(f"CREATE DATABASE {admin_db} OWNER {admin}")
    script = tmp_path / "bootstrap.sql"
    script.write_text(bootstrap_sql(role, database, admin_db))

    first, second = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    for password in (first, second):  # the second run converges on a rotated password and changes nothing else
        proc = _psql(postgres, admin, admin_password, script, password, admin_db)
        assert proc.returncode == 0, proc.stderr
        assert password not in proc.stdout + proc.stderr, "the password must not reach the Job's log"

    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        _connect(postgres, role, first, database)
    with _connect(postgres, role, second, database) as conn:
        conn.execute("CREATE TABLE feast_probe (id int)")  # it owns its database (and its public schema)
        owner, = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
                              (database,)).fetchone()
        assert owner == role
        flags = conn.execute("SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = %s",
                             (role,)).fetchone()
        assert flags == (False, False, False)
    # PUBLIC lost CONNECT on the client's database and on the registry's: the client reaches only its own.
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        _connect(postgres, role, second, admin_db)
    with postgres.admin_connect() as conn:
        conn.execute(f"CREATE ROLE other_{tag} LOGIN PASSWORD 'x{tag}'")
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        _connect(postgres, f"other_{tag}", f"x{tag}", database)


def test_bootstrap_refuses_names_it_would_have_to_quote():
    with pytest.raises(ValueError, match="database client role 'feast; drop'"):
        bootstrap_sql("feast; drop", "feast_registry")
