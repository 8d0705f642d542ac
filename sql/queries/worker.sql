-- Statements of the Kafka worker (consumer/writer.py), SPEC §13.2 and §14.
-- Each block starts with `-- name: <name>`; parameters are psycopg named placeholders. Every statement takes
-- whole arrays, so a batch costs the same few statements whatever its size.

-- name: stored_offsets
-- The offsets PostgreSQL holds for these partitions (the truth; Kafka's commit is a hint).
SELECT o.topic, o.partition, o.next_offset
FROM accum.consumer_offsets o
JOIN unnest(%(topics)s::text[], %(partitions)s::int[]) AS v(topic, partition)
  ON o.topic = v.topic AND o.partition = v.partition
WHERE o.consumer_group = %(group)s;

-- name: insert_offsets
-- First sight of a partition: record where it starts. A concurrent first owner may win; the caller re-reads.
INSERT INTO accum.consumer_offsets AS o (consumer_group, topic, partition, next_offset)
SELECT %(group)s, v.topic, v.partition, v.next_offset
FROM unnest(%(topics)s::text[], %(partitions)s::int[], %(offsets)s::bigint[]) AS v(topic, partition, next_offset)
ORDER BY v.topic, v.partition
ON CONFLICT (consumer_group, topic, partition) DO NOTHING;

-- name: advance_offsets
-- Fencing (SPEC §14.2): move a partition only from the offset this worker started its batch from. Runs first in
-- the batch transaction, so a competing owner blocks on the row lock here, before doing any work, and then finds
-- the row moved. Sorted, so two workers never lock the same rows in opposite orders.
UPDATE accum.consumer_offsets AS o
SET next_offset = v.next_offset, updated_at = now()
FROM (
    SELECT * FROM unnest(%(topics)s::text[], %(partitions)s::int[], %(expected)s::bigint[], %(next)s::bigint[])
        AS u(topic, partition, expected, next_offset)
    ORDER BY u.topic, u.partition
) AS v
WHERE o.consumer_group = %(group)s AND o.topic = v.topic AND o.partition = v.partition
  AND o.next_offset = v.expected
RETURNING o.topic, o.partition;

-- name: claim_ids
-- Idempotency records go in before the commands apply (SPEC §13.2): a concurrent batch carrying the same id
-- waits on our uncommitted row, then sees a duplicate. Sorted by key, so two batches never deadlock on ids.
INSERT INTO accum.consumer_commands
    (register, id, fingerprint, source_topic, source_partition, source_offset)
SELECT v.register, v.id, v.fingerprint, v.topic, v.partition, v.source_offset
FROM unnest(%(registers)s::text[], %(ids)s::text[], %(fingerprints)s::text[], %(topics)s::text[],
            %(partitions)s::int[], %(offsets)s::bigint[])
    AS v(register, id, fingerprint, topic, partition, source_offset)
ORDER BY v.register, v.id
ON CONFLICT (register, id) DO NOTHING
RETURNING register, id;

-- name: recorded_fingerprints
-- A separate statement on purpose: under READ COMMITTED it takes a new snapshot, so it sees the rows of the
-- concurrent batch `claim_ids` waited for.
SELECT c.register, c.id, c.fingerprint
FROM accum.consumer_commands c
JOIN unnest(%(registers)s::text[], %(ids)s::text[]) AS v(register, id)
  ON c.register = v.register AND c.id = v.id;

-- name: apply
SELECT ord, outcome, affected, sqlstate, message
FROM accum.register_apply(%(commands)s::jsonb, 'skip')
ORDER BY ord;

-- name: release_ids
-- Records of commands the engine rejected go away with the batch, so a corrected command may reuse the id.
DELETE FROM accum.consumer_commands c
USING unnest(%(registers)s::text[], %(ids)s::text[]) AS v(register, id)
WHERE c.register = v.register AND c.id = v.id;

-- name: register_names
SELECT name FROM accum._registers;

-- name: hand_over_ids
-- Within one batch, the first command carrying an id was rejected: the id passes to the next command carrying
-- it, as if the two had come in separate batches (a corrected command may reuse the id).
UPDATE accum.consumer_commands AS c
SET fingerprint = v.fingerprint, source_topic = v.topic, source_partition = v.partition,
    source_offset = v.source_offset
FROM unnest(%(registers)s::text[], %(ids)s::text[], %(fingerprints)s::text[], %(topics)s::text[],
            %(partitions)s::int[], %(offsets)s::bigint[])
    AS v(register, id, fingerprint, topic, partition, source_offset)
WHERE c.register = v.register AND c.id = v.id;
