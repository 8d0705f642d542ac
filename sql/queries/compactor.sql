-- Statements of the compactor (consumer/compactor.py), SPEC §15.
-- Each block starts with `-- name: <name>`; parameters are psycopg named placeholders. The compactor's
-- connections are in autocommit mode, so every statement is a short transaction of its own (verify opens an
-- explicit read-only one).

-- name: try_lead
-- Leader election. A session lock: held until released or until the session ends, so a leader that dies or
-- loses its connection gives leadership up with its backend. Never called again while held (session advisory
-- locks stack). The key is one bigint ("accumcmp" in ASCII); the engine's locks take (int, int) pairs, a key
-- space of their own, and the migration runner's bigint is "accummig".
SELECT pg_try_advisory_lock(%(key)s::bigint);

-- name: release_lead
SELECT pg_advisory_unlock(%(key)s::bigint);

-- name: leader_session
-- The server notices a vanished compactor host within about 25 s (keepalive idle 10 s + 3 probes 5 s apart),
-- ends the session and so frees the lock for a standby; PostgreSQL's defaults (the kernel's, 2 hours) would
-- keep a dead leader in charge. Ignored on Unix-socket connections.
SELECT set_config('tcp_keepalives_idle', '10', false),
       set_config('tcp_keepalives_interval', '5', false),
       set_config('tcp_keepalives_count', '3', false);

-- name: registers
-- Re-read every cycle: a register created, altered or dropped since is picked up without a restart.
SELECT name, high_write FROM accum._registers ORDER BY name COLLATE "C";

-- name: merge
-- One merge transaction of one register: at most max_rows delta rows older than min_age (SPEC §9).
SELECT accum.register_merge(%(register)s, %(max_rows)s, %(min_age)s::interval);

-- name: delta_status
SELECT register, pending_rows, lag_seconds FROM accum.register_delta_status();

-- name: create_partitions
-- The current period and the next `periods`, plus a partition for rows waiting in the default one. Takes its
-- own short lock_timeout: under traffic it gives way and the next maintenance run retries.
SELECT accum.register_create_partitions(%(register)s, NULL, %(periods)s);

-- name: purge_commands
-- Expired idempotency records (SPEC §13.2), at most `limit` per statement so no transaction runs long; the
-- caller repeats while a statement removed a full batch. Oldest first, through the applied_at index.
DELETE FROM accum.consumer_commands c
USING (
    SELECT register, id FROM accum.consumer_commands
    WHERE applied_at < now() - make_interval(hours => %(hours)s)
    ORDER BY applied_at
    LIMIT %(limit)s
) AS old
WHERE c.register = old.register AND c.id = old.id
  AND c.applied_at < now() - make_interval(hours => %(hours)s);

-- name: verify_timeout
-- Inside the verify transaction only (is_local): the session keeps its own setting.
SELECT set_config('statement_timeout', %(ms)s, true);

-- name: verify
-- A full verify is one statement, one snapshot (SPEC §10); only problem rows come back, counted per kind,
-- with at most three samples each, so a badly damaged register cannot flood the compactor's memory.
SELECT v.check_type, v.status, count(*) AS problems,
       jsonb_agg(jsonb_build_object('period', v.period, 'dimensions', v.dimensions,
                                    'expected', v.expected, 'actual', v.actual))
           FILTER (WHERE v.n <= 3) AS samples
FROM (
    SELECT r.*, row_number() OVER (PARTITION BY r.check_type, r.status) AS n
    FROM accum.register_verify(%(register)s, problems_only := true) r
) v
GROUP BY v.check_type, v.status
ORDER BY v.check_type, v.status;
