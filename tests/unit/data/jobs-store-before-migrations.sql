-- A jobs database as the release before Alembic migrations created it (sqlite3 .dump).
-- tests/unit/test_store_migrations.py upgrades it and checks that every job is intact.
BEGIN TRANSACTION;
CREATE TABLE audit (
	id INTEGER NOT NULL, 
	time DATETIME NOT NULL, 
	actor VARCHAR(255) NOT NULL, 
	action VARCHAR(32) NOT NULL, 
	job_id INTEGER, 
	owner VARCHAR(255) NOT NULL, 
	job_name VARCHAR(63) NOT NULL, 
	detail JSON NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(job_id) REFERENCES jobs (id) ON DELETE SET NULL
);
INSERT INTO "audit" VALUES(1,'2026-11-25 22:49:07.813678','alice','submit',1,'alice','news','{"profile": "small"}');
INSERT INTO "audit" VALUES(2,'2026-11-25 22:49:07.822138','alice','submit',2,'alice','nightly','{"profile": "small"}');
INSERT INTO "audit" VALUES(3,'2026-11-25 22:49:07.823427','bob','submit',3,'bob','train','{"profile": "gpu-a100"}');
INSERT INTO "audit" VALUES(4,'2026-11-25 22:49:07.824434','jürgen','submit',4,'jürgen','crawl','{"profile": "small"}');
INSERT INTO "audit" VALUES(5,'2026-11-25 22:49:07.832224','admin','stop',4,'jürgen','crawl','{"from": "pending"}');
CREATE TABLE jobs (
	id INTEGER NOT NULL, 
	user VARCHAR(255) NOT NULL, 
	name VARCHAR(63) NOT NULL, 
	kind VARCHAR(16) NOT NULL, 
	profile VARCHAR(63), 
	groups JSON NOT NULL, 
	usage JSON NOT NULL, 
	spec JSON NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	exit_code INTEGER, 
	message TEXT, 
	restarts INTEGER NOT NULL, 
	created DATETIME NOT NULL, 
	started DATETIME, 
	finished DATETIME, 
	log_tail TEXT NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_jobs_user_name UNIQUE (user, name)
);
INSERT INTO "jobs" VALUES(1,'alice','news','scraper','small','["researchers"]','{"cpu": 1.0, "memory": 4294967296, "gpus": 0, "servers": 0, "jobs": 1}','{"name": "news", "kind": "scraper", "command": ["python", "scrape.py"], "files": {"scrape.py": "print(''hi'')\n"}, "profile": null, "env": {}}','running',NULL,NULL,0,'2026-11-25 22:49:07.812541','2026-11-25 22:49:07.824882',NULL,'');
INSERT INTO "jobs" VALUES(2,'alice','nightly','scheduled','small','["researchers"]','{"cpu": 1.0, "memory": 4294967296, "gpus": 0, "servers": 0, "jobs": 1}','{"name": "nightly", "kind": "scheduled", "command": ["python", "-c", "1"], "files": {}, "profile": null, "env": {}, "schedule": "0 6 * * 1-5", "timezone": "Europe/Berlin", "concurrency_policy": "forbid", "history_limit": 3, "max_live_runs": 1}','pending',NULL,NULL,0,'2026-11-25 22:49:07.821654',NULL,NULL,'');
INSERT INTO "jobs" VALUES(3,'bob','train','batch','gpu-a100','["researchers"]','{"cpu": 1.0, "memory": 4294967296, "gpus": 0, "servers": 0, "jobs": 1}','{"name": "train", "kind": "batch", "command": ["python", "train.py"], "files": {}, "profile": "gpu-a100", "env": {"SEED": "1"}, "retries": 2, "deadline_seconds": 3600}','failed',3,'exited with code 3',0,'2026-11-25 22:49:07.823123','2026-11-25 22:49:07.828063','2026-11-25 22:49:07.829089','epoch 1
Traceback ...
');
INSERT INTO "jobs" VALUES(4,'jürgen','crawl','scraper','small','["researchers"]','{"cpu": 1.0, "memory": 4294967296, "gpus": 0, "servers": 0, "jobs": 1}','{"name": "crawl", "kind": "scraper", "command": ["python", "crawl.py"], "files": {}, "profile": null, "env": {}}','stopped',NULL,'stopped',0,'2026-11-25 22:49:07.824145',NULL,'2026-11-25 22:49:07.831680','');
CREATE INDEX ix_jobs_status ON jobs (status);
CREATE INDEX ix_jobs_user ON jobs (user);
CREATE INDEX ix_audit_time ON audit (time);
COMMIT;
