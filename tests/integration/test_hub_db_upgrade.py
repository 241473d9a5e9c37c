"""A JupyterHub 5.4.4 database, upgraded by our stack (JupyterHub 6, jhub_ext, hub_config/).

Production runs the Zero to JupyterHub chart 4.3.3, whose hub image runs JupyterHub 5.4.4 (4.4.0:
5.5.0, the same database schema). images/hub installs jhub_ext on that image, which moves JupyterHub
to 6.x, and the chart's hub pod runs, in /srv/jupyterhub, with ``db_url = sqlite:///jupyterhub.sqlite``::

    jupyterhub --config /usr/local/etc/jupyterhub/jupyterhub_config.py --upgrade-db

(``--upgrade-db`` only when ``hub.db.type`` is ``sqlite-pvc``, the default, or ``hub.db.upgrade`` is
true: templates/hub/deployment.yaml). So the first start of our image upgrades the database.

These tests make a real JupyterHub 5.4.4 database with 5.4.4's own ORM, in a virtualenv built once
under ``$JHUB_EXT_CACHE`` (default ``~/.cache/jhub_ext``; about 20 s the first time), then show that:

- our hub refuses the 5.4.4 database unless asked to upgrade it, and leaves it untouched;
- run as the chart runs it, our hub backs the file up, upgrades it to JupyterHub 6's newest schema
  and serves it: users, groups, roles, spawn choices and a 5.4.4 API token are all still there;
- ``jupyterhub upgrade-db`` (what non-SQLite databases need) keeps every row, server records too;
- the upgrade is one-way for JupyterHub 5: 5.4.4 refuses the upgraded database, and the chart's
  ``--upgrade-db`` cannot take it back (a rolled-back image crash-loops). The backup restores it.
  (JupyterHub 6's migrations have downgrade steps, but JupyterHub does not support using them.)
"""

from __future__ import annotations

import fcntl
import filecmp
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import jupyterhub
import pytest
import requests
from alembic.script import ScriptDirectory
from jupyterhub import orm

from ..conftest import HUB_CONFIG
from ..hubprocess import HubProcess

pytestmark = pytest.mark.integration

OLD_VERSION = "5.4.4"
# JupyterHub 5.4.4's newest migration (jupyterhub/alembic/versions/4621fec11365_manage_roles.py);
# 5.5.0 has the same one
OLD_HEAD = "4621fec11365"
# what the chart's hub image (k8s-hub 4.3.3, images/hub/requirements.txt) installs beside JupyterHub
OLD_PINS = (f"jupyterhub=={OLD_VERSION}", "sqlalchemy==2.0.48", "alembic==1.18.4")
NEW_HEAD = ScriptDirectory(str(Path(jupyterhub.__file__).parent / "alembic")).get_current_head()
TOKEN = "jhub-ext-upgrade-test-token-5x"  # alice's API token, issued by JupyterHub 5.4.4
DB_URL = "sqlite:///jupyterhub.sqlite"  # the chart's, relative to the hub's working directory

# Run by JupyterHub 5.4.4's Python: what a 5.4.4 hub keeps in its database, written by its own ORM.
MAKE_OLD_DATABASE = """
import json, sys
from datetime import datetime, timezone
from jupyterhub import orm, roles, __version__

url, token = sys.argv[1:3]
db = orm.new_session_factory(url)()  # creates the schema and stamps 5.4.4's alembic revision
now = datetime.now(timezone.utc).replace(tzinfo=None)
# what the hub makes on its first start: its own OAuth client and the default roles
db.add(orm.OAuthClient(identifier="jupyterhub", secret="", redirect_uri="", description="JupyterHub"))
db.commit()
for role in roles.get_default_roles():
    roles.create_role(db, role)
researchers = orm.Group(name="researchers", properties={"lab": "north"})
gpu = orm.Group(name="gpu")
users = {}
for name, groups, admin in [
    ("alice", [researchers], False),
    ("bob", [researchers, gpu], False),
    ("admin", [], True),
    ("carol", [], False),  # made through the admin page: in no configuration
]:
    users[name] = orm.User(name=name, admin=admin, groups=groups, created=now, last_activity=now)
    db.add(users[name])
    db.commit()
    roles.assign_default_roles(db, users[name])
# a role an authenticator manages (manage_roles): no configuration names it, so only the database keeps it
roles.create_role(db, {"name": "team-lead", "scopes": ["admin:servers!group=researchers"],
                       "managed_by_auth": True})
roles.grant_role(db, researchers, orm.Role.find(db, "team-lead"), managed=True)
users["alice"].new_api_token(token=token, note="made by JupyterHub 5.4.4")
# alice's running default server (as the hub records one) and a stopped named server of bob's whose
# name JupyterHub 6 no longer allows for new servers
server = orm.Server(ip="127.0.0.1", port=54321, base_url="/user/alice/")
db.add(orm.Spawner(user=users["alice"], name="", server=server, state={"jhub_ext_usage": {"servers": 1}},
                   user_options={"profile": "small"}, started=now, last_activity=now))
db.add(orm.Spawner(user=users["bob"], name="My Analysis", user_options={"profile": "small"}))
db.add(orm.Service(name="jobs", from_config=True))
db.commit()
print(json.dumps({"jupyterhub": __version__}))
"""

# Run by JupyterHub 5.4.4's Python: open a database as 5.4.4 does (checking its revision), list it.
READ_OLD_DATABASE = """
import json, sys
from jupyterhub import orm
db = orm.new_session_factory(sys.argv[1])()
token = orm.APIToken.find(db, sys.argv[2])
print(json.dumps({"users": sorted(u.name for u in db.query(orm.User)),
                  "token_owner": token.user.name if token else None}))
"""


def cache_root() -> Path:
    """Where built things are kept between runs (as scripts/build-*.sh keep theirs)."""
    if os.environ.get("JHUB_EXT_CACHE"):
        return Path(os.environ["JHUB_EXT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "jhub_ext"


def old_hub_venv() -> Path:
    """A virtualenv with JupyterHub 5.4.4, built once (a file lock keeps concurrent runs from
    building it twice; ``.complete``, written last, says it is whole)."""
    venv = cache_root() / f"jupyterhub-{OLD_VERSION}-venv"
    complete = venv / ".complete"
    spec = " ".join(OLD_PINS) + "\n"
    if complete.exists() and complete.read_text() == spec:
        return venv
    venv.parent.mkdir(parents=True, exist_ok=True)
    with (venv.parent / f"{venv.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if complete.exists() and complete.read_text() == spec:
            return venv
        shutil.rmtree(venv, ignore_errors=True)  # an earlier build that did not finish, or other pins
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, *OLD_PINS], check=True)
        complete.write_text(spec)
    return venv


def run_old(old_bin: Path, command: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``command`` (``python`` or ``jupyterhub``) of the JupyterHub 5.4.4 virtualenv in ``cwd``,
    with its ``bin`` first on ``PATH`` (``jupyterhub --upgrade-db`` runs ``alembic`` from there)."""
    env = {**os.environ, "PATH": f"{old_bin}{os.pathsep}{os.environ.get('PATH', '')}"}
    for name in ("PYTHONPATH", "VIRTUAL_ENV"):  # nothing of ours may leak into 5.4.4's Python
        env.pop(name, None)
    return subprocess.run(
        [str(old_bin / command), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def old_bin() -> Path:
    """The ``bin`` directory of the JupyterHub 5.4.4 virtualenv."""
    return old_hub_venv() / "bin"


@pytest.fixture(scope="module")
def old_database(old_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database made by JupyterHub 5.4.4 (tests copy it: it is never changed)."""
    directory = tmp_path_factory.mktemp("jupyterhub-5.4.4-db")
    made = run_old(old_bin, "python", "-c", MAKE_OLD_DATABASE, DB_URL, TOKEN, cwd=directory)
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout.splitlines()[-1]) == {"jupyterhub": OLD_VERSION}
    database = directory / "jupyterhub.sqlite"
    assert revision(database) == OLD_HEAD
    database.chmod(0o444)
    return database


class ChartHub(HubProcess):
    """Our hub, from hub_config/ in local mode, started with the chart's arguments
    (``jupyterhub --config FILE`` plus ``extra_args``) on the chart's database URL, in ``workdir``."""

    def __init__(self, workdir: Path, extra_args: list[str]):
        # the users' separate environment (root's local-mode isolation) is beside the point here
        super().__init__(workdir, extra_env={"JHUB_EXT_DB_URL": DB_URL, "JHUB_EXT_SYSTEM_USERS": "0"})
        self.extra_args = extra_args

    def command(self) -> list[str]:
        jupyterhub_bin = Path(sys.executable).parent / "jupyterhub"
        return [str(jupyterhub_bin), "--config", str(HUB_CONFIG / "jupyterhub_config.py"), *self.extra_args]

    def cleanup(self) -> None:
        self.stop()
        if not self.state_dir.is_relative_to(self.workdir):  # HubProcess puts it in /tmp as root
            shutil.rmtree(self.state_dir, ignore_errors=True)


@pytest.fixture
def workdir(tmp_path: Path, old_database: Path) -> Path:
    """The hub's working directory (the chart's /srv/jupyterhub) holding a copy of the 5.4.4 database."""
    shutil.copyfile(old_database, tmp_path / "jupyterhub.sqlite")
    return tmp_path


def revision(database: Path) -> str:
    """The database's alembic revision, read without JupyterHub."""
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as connection:
        (version,) = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    return str(version)


def backups(workdir: Path) -> list[Path]:
    """The copies JupyterHub's ``upgrade_if_needed`` makes (``jupyterhub.sqlite.<timestamp>``)."""
    return sorted(workdir.glob("jupyterhub.sqlite.*"))


def run_upgrade_db(workdir: Path) -> subprocess.CompletedProcess[str]:
    """``jupyterhub upgrade-db`` with our hub's configuration, in ``workdir``."""
    hub = ChartHub(workdir, [])
    try:
        command = [hub.command()[0], "upgrade-db", *hub.command()[1:]]
        return subprocess.run(command, cwd=workdir, env=hub.env, capture_output=True, text=True, timeout=120)
    finally:
        hub.cleanup()


@pytest.fixture
def new_orm(workdir: Path) -> Iterator[Any]:
    """A session on the upgraded database through our JupyterHub's ORM (made on first use)."""
    sessions = []

    def session() -> Any:
        sessions.append(orm.new_session_factory(f"sqlite:///{workdir / 'jupyterhub.sqlite'}")())
        return sessions[-1]

    yield session
    for made in sessions:
        made.close()
        made.get_bind().dispose()


def assert_everything_kept(db: Any, *, server_kept: bool) -> None:
    """What JupyterHub 5.4.4 stored, as JupyterHub 6 reads it after the upgrade."""
    users = {user.name: user for user in db.query(orm.User)}
    assert set(users) == {"alice", "bob", "admin", "carol"}
    assert {g.name for g in users["bob"].groups} == {"researchers", "gpu"}
    assert {u.name for u in orm.Group.find(db, "researchers").users} == {"alice", "bob"}
    assert orm.Group.find(db, "researchers").properties == {"lab": "north"}
    assert users["admin"].admin
    assert all(user.user_info is None for user in users.values())  # JupyterHub 6's new column

    assert "user" in {role.name for role in users["carol"].roles}
    lead = orm.Role.find(db, "team-lead")
    assert lead is not None and lead.managed_by_auth
    assert lead.scopes == ["admin:servers!group=researchers"]
    assert [g.name for g in lead.groups] == ["researchers"]

    token = orm.APIToken.find(db, TOKEN)
    assert token is not None and token.user.name == "alice"
    assert token.note == "made by JupyterHub 5.4.4"

    alice = users["alice"].orm_spawners[""]
    assert alice.user_options == {"profile": "small"}  # the spawn form's pre-selection reads this
    assert alice.display_name is None  # JupyterHub 6's new column
    if server_kept:
        assert alice.server is not None
        assert (alice.server.port, alice.server.base_url) == (54321, "/user/alice/")
        assert alice.state == {"jhub_ext_usage": {"servers": 1}}
    bob = users["bob"].orm_spawners["My Analysis"]  # kept as it was: JupyterHub 6 renames nothing by itself
    assert (bob.name, bob.display_name, bob.user_options) == ("My Analysis", None, {"profile": "small"})
    assert orm.Service.find(db, "jobs").timeout == 30  # JupyterHub 6's new column, its default


def test_our_hub_refuses_a_5x_database_unless_told_to_upgrade(workdir: Path) -> None:
    """What a chart install runs when it does not pass ``--upgrade-db`` (``hub.db.type`` other than
    ``sqlite-pvc`` and ``hub.db.upgrade`` unset): the hub exits saying what to do, and touches nothing."""
    hub = ChartHub(workdir, [])
    try:
        result = hub.run(timeout=120)
    finally:
        hub.cleanup()
    assert result.returncode == 1, result.stderr
    assert (
        f"Found database schema version {OLD_HEAD} != {NEW_HEAD}. Backup your database and run "
        "`jupyterhub upgrade-db` to upgrade to the latest schema."
    ) in result.stderr
    assert revision(workdir / "jupyterhub.sqlite") == OLD_HEAD
    assert backups(workdir) == []


def test_our_hub_upgrades_a_5x_database_as_the_chart_starts_it(
    workdir: Path, old_database: Path, new_orm: Any
) -> None:
    """The first start of our hub image on a chart install with the default ``hub.db.type: sqlite-pvc``."""
    hub = ChartHub(workdir, ["--upgrade-db"])
    try:
        hub.start(timeout=120)
        assert requests.get(f"{hub.url}/hub/api/", timeout=10).json()["version"] == jupyterhub.__version__
        # a token JupyterHub 5.4.4 issued still authenticates, with alice's groups
        me = requests.get(f"{hub.url}/hub/api/user", headers={"Authorization": f"token {TOKEN}"}, timeout=10)
        assert me.status_code == 200, me.text
        assert (me.json()["name"], me.json()["groups"]) == ("alice", ["researchers"])
    finally:
        hub.cleanup()
    log = hub.log()
    assert "Upgrading sqlite:///jupyterhub.sqlite" in log
    assert f"Running upgrade {OLD_HEAD} -> " in log
    # the named server JupyterHub 6 would not accept today is reported, and kept
    assert "1 named servers have names that do not comply with restrictions introduced in JupyterHub 6" in log

    assert revision(workdir / "jupyterhub.sqlite") == NEW_HEAD
    # JupyterHub backed the SQLite file up first, beside it (on the hub's PVC in the chart)
    [backup] = backups(workdir)
    assert filecmp.cmp(backup, old_database, shallow=False)
    # alice's server process is not running here, so the hub found it stopped and cleared its record
    assert "alice appears to have stopped while the Hub was down" in log
    assert_everything_kept(new_orm(), server_kept=False)


def test_upgrade_db_command_keeps_every_record(workdir: Path, new_orm: Any) -> None:
    """``jupyterhub upgrade-db`` alone (JupyterHub's documented step; what a PostgreSQL install needs
    unless ``hub.db.upgrade`` is true): the migration keeps every row, the server record too."""
    result = run_upgrade_db(workdir)
    assert result.returncode == 0, result.stderr
    assert revision(workdir / "jupyterhub.sqlite") == NEW_HEAD
    assert len(backups(workdir)) == 1
    assert_everything_kept(new_orm(), server_kept=True)
    # a second run finds nothing to do
    again = run_upgrade_db(workdir)
    assert again.returncode == 0, again.stderr
    assert "Upgrading" not in again.stderr
    assert len(backups(workdir)) == 1


def test_jupyterhub_5_cannot_use_or_downgrade_the_upgraded_database(
    workdir: Path, old_database: Path, old_bin: Path
) -> None:
    """Rolling the hub image back after the upgrade: JupyterHub 5.4.4 refuses the database, and the
    chart's ``--upgrade-db`` cannot move it back (5.4.4 does not know 6's revisions), so the hub pod
    would crash-loop. Restoring the backup the upgrade made is the way back."""
    database = workdir / "jupyterhub.sqlite"
    upgraded = run_upgrade_db(workdir)
    assert upgraded.returncode == 0, upgraded.stderr
    [backup] = backups(workdir)
    (workdir / "jupyterhub_config.py").write_text(f'c.JupyterHub.db_url = "{DB_URL}"\n')  # the chart's

    refused = run_old(old_bin, "jupyterhub", "--config", "jupyterhub_config.py", cwd=workdir)
    assert refused.returncode == 1, refused.stderr
    assert f"Running JupyterHub version {OLD_VERSION}" in refused.stderr
    assert (
        f"Found database schema version {NEW_HEAD} != {OLD_HEAD}. Backup your database and run "
        "`jupyterhub upgrade-db`"
    ) in refused.stderr

    rolled_back = run_old(
        old_bin, "jupyterhub", "--config", "jupyterhub_config.py", "--upgrade-db", cwd=workdir
    )
    assert rolled_back.returncode != 0
    assert f"Can't locate revision identified by '{NEW_HEAD}'" in rolled_back.stderr
    assert revision(database) == NEW_HEAD  # nothing moved back
    # ... and every such start leaves one more backup, of the upgraded database, beside it
    assert len(backups(workdir)) == 2

    # the way back: the copy the upgrade made is JupyterHub 5.4.4's database, and 5.4.4 opens it
    assert filecmp.cmp(backup, old_database, shallow=False)
    shutil.copyfile(backup, database)
    reopened = run_old(old_bin, "python", "-c", READ_OLD_DATABASE, DB_URL, TOKEN, cwd=workdir)
    assert reopened.returncode == 0, reopened.stderr
    assert json.loads(reopened.stdout.splitlines()[-1]) == {
        "users": ["admin", "alice", "bob", "carol"],
        "token_owner": "alice",
    }
