-- 0001_schema: the accum schema, the register registry, the worker's bookkeeping tables,
-- and the small immutable helpers every generated function shares (messages, types,
-- periods, rendering). Generated per-register objects come from 0003 onwards.

-- The migrations runner creates schema accum (and accum.schema_migrations) first.

-- Functions created by the owner are not executable by PUBLIC: callers get EXECUTE
-- through the group roles only (SPEC §3.3).
ALTER DEFAULT PRIVILEGES IN SCHEMA accum REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

CREATE TABLE accum._registers (
    id              integer GENERATED ALWAYS AS IDENTITY UNIQUE,
    name            text PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('balance', 'turnover')),
    -- Parallel arrays ordered by name (bytewise): column order of every generated table.
    dim_names       text[] NOT NULL,
    dim_types       text[] NOT NULL,
    res_names       text[] NOT NULL,
    res_types       text[] NOT NULL,
    totals_period   text NOT NULL CHECK (totals_period IN ('day', 'month', 'year')),
    partition_by    text NOT NULL CHECK (partition_by IN ('day', 'month', 'quarter', 'year')),
    high_write      boolean NOT NULL,
    recorder_type   text NOT NULL CHECK (recorder_type IN ('text', 'bigint', 'uuid')),
    time_zone       text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Worker bookkeeping (SPEC §13.2, §14.2): offsets are the truth, Kafka commits a hint.
CREATE TABLE accum.consumer_offsets (
    consumer_group  text NOT NULL,
    topic           text NOT NULL,
    partition       integer NOT NULL,
    next_offset     bigint NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);

CREATE TABLE accum.consumer_commands (
    register        text NOT NULL,
    id              text NOT NULL,
    fingerprint     text NOT NULL,
    source_topic    text,
    source_partition integer,
    source_offset   bigint,
    applied_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (register, id)
);
CREATE INDEX consumer_commands_applied_at ON accum.consumer_commands (applied_at);

-- ---------------------------------------------------------------------------
-- Messages (SPEC §11): "<register>: [<location>: ]<problem>".
-- ---------------------------------------------------------------------------

CREATE FUNCTION accum._msg_name(p_name text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN p_name IS NULL THEN '(null)'
        WHEN p_name ~ '^[a-z_][a-z0-9_]*$' THEN left(p_name, 64)
        ELSE left(to_jsonb(p_name)::text, 64)
    END
$$;

-- Cuts a value for DETAIL / messages so a huge input never floods a log line.
CREATE FUNCTION accum._clip(p_text text, p_len integer DEFAULT 200) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN length(p_text) > p_len THEN left(p_text, p_len - 1) || '…' ELSE p_text END
$$;

CREATE FUNCTION accum._raise(p_state text, p_register text, p_problem text, p_detail text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_detail IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = p_state, MESSAGE = accum._msg_name(p_register) || ': ' || p_problem;
    END IF;
    RAISE EXCEPTION USING ERRCODE = p_state, MESSAGE = accum._msg_name(p_register) || ': ' || p_problem,
        DETAIL = accum._clip(p_detail);
END $$;

-- An error record travels through set-based validation as text[]:
-- {sqlstate, location, problem, detail}; NULL means "valid".
CREATE FUNCTION accum._raise_err(p_register text, p_err text[]) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    PERFORM accum._raise(p_err[1], p_register,
        CASE WHEN coalesce(p_err[2], '') = '' THEN p_err[3] ELSE p_err[2] || ': ' || p_err[3] END,
        p_err[4]);
END $$;

CREATE FUNCTION accum._err_message(p_register text, p_err text[]) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT accum._msg_name(p_register) || ': '
        || CASE WHEN coalesce(p_err[2], '') = '' THEN p_err[3] ELSE p_err[2] || ': ' || p_err[3] END
$$;

-- JSON value rendered for a message: short, and strings keep their quotes.
CREATE FUNCTION accum._jshow(p_value jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT accum._clip(p_value::text, 80)
$$;

-- ---------------------------------------------------------------------------
-- Names and types (SPEC §4.2, §4.3).
-- ---------------------------------------------------------------------------

CREATE FUNCTION accum._reserved_columns() RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ARRAY['id', 'recorder', 'period', 'recorded_at', 'dim_hash', 'bucket', 'version',
                 'last_movement_at', 'created_at', 'movement_type']
$$;

-- Canonical type or NULL when the spelling is not on the allow-list.
-- Returns {canonical, base, precision, scale}; base is one of
-- smallint, integer, bigint, numeric, text, varchar, uuid, date, boolean.
CREATE FUNCTION accum._parse_type(p_type text) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    v_t text := regexp_replace(lower(btrim(p_type)), '\s+', ' ', 'g');
    v_m text[];
    v_p integer;
    v_s integer;
BEGIN
    IF v_t IS NULL THEN
        RETURN NULL;
    END IF;
    v_t := regexp_replace(v_t, '\s*([(),])\s*', '\1', 'g');
    CASE
        WHEN v_t IN ('smallint', 'int2') THEN RETURN ARRAY['smallint', 'smallint', NULL, NULL];
        WHEN v_t IN ('integer', 'int', 'int4') THEN RETURN ARRAY['integer', 'integer', NULL, NULL];
        WHEN v_t IN ('bigint', 'int8') THEN RETURN ARRAY['bigint', 'bigint', NULL, NULL];
        WHEN v_t = 'text' THEN RETURN ARRAY['text', 'text', NULL, NULL];
        WHEN v_t = 'uuid' THEN RETURN ARRAY['uuid', 'uuid', NULL, NULL];
        WHEN v_t = 'date' THEN RETURN ARRAY['date', 'date', NULL, NULL];
        WHEN v_t IN ('boolean', 'bool') THEN RETURN ARRAY['boolean', 'boolean', NULL, NULL];
        WHEN v_t IN ('numeric', 'decimal') THEN RETURN ARRAY['numeric', 'numeric', NULL, NULL];
        ELSE NULL;
    END CASE;
    v_m := regexp_match(v_t, '^(?:numeric|decimal)\((\d{1,5})(?:,(\d{1,5}))?\)$');
    IF v_m IS NOT NULL THEN
        v_p := v_m[1]::integer;
        v_s := coalesce(v_m[2]::integer, 0);
        IF v_p BETWEEN 1 AND 1000 AND v_s BETWEEN 0 AND v_p THEN
            RETURN ARRAY[format('numeric(%s,%s)', v_p, v_s), 'numeric', v_p::text, v_s::text];
        END IF;
        RETURN NULL;
    END IF;
    v_m := regexp_match(v_t, '^(?:varchar|character varying)\((\d{1,5})\)$');
    IF v_m IS NOT NULL AND v_m[1]::integer BETWEEN 1 AND 1024 THEN
        RETURN ARRAY[format('varchar(%s)', v_m[1]::integer), 'varchar', v_m[1]::integer::text, NULL];
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION accum._allowed_types_text(p_role text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE p_role
        WHEN 'dimension' THEN 'smallint, integer, bigint, numeric(p,s), text, varchar(n), uuid, date, boolean'
        ELSE 'smallint, integer, bigint, numeric, numeric(p), numeric(p,s)'
    END
$$;

-- ---------------------------------------------------------------------------
-- Dates and periods (SPEC §5.2). Everything is computed from parsed fields, never from
-- the session's DateStyle or TimeZone.
-- ---------------------------------------------------------------------------

CREATE FUNCTION accum._valid_ymd(p_y integer, p_m integer, p_d integer) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT p_y BETWEEN 1 AND 9999 AND p_m BETWEEN 1 AND 12 AND p_d >= 1 AND p_d <=
        CASE WHEN p_m = 2 THEN
                CASE WHEN (p_y % 4 = 0 AND p_y % 100 <> 0) OR p_y % 400 = 0 THEN 29 ELSE 28 END
             WHEN p_m IN (4, 6, 9, 11) THEN 30
             ELSE 31 END
$$;

-- Period forms (SPEC §5.2). The first pattern decides the form (22007), the second the
-- field ranges (22008); both are plain matches, much cheaper per row than capture groups.
CREATE FUNCTION accum._period_form_regex() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT '^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?)?(Z|[+-][0-9]{2}(:[0-9]{2})?)?$'
$$;

CREATE FUNCTION accum._period_range_regex() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT '^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])([T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?)?(Z|[+-](0[0-9]|1[0-5])(:[0-5][0-9])?)?$'
$$;

-- ---------------------------------------------------------------------------
-- Rendering (SPEC §8): independent of DateStyle, TimeZone and extra_float_digits.
-- ---------------------------------------------------------------------------

-- A timestamptz literal that reads back identically in every session (DateStyle, TimeZone).
CREATE FUNCTION accum._ts_lit(p_ts timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT to_char(p_ts AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'
        || CASE WHEN (p_ts AT TIME ZONE 'UTC') < timestamp '0001-01-01' THEN ' BC' ELSE '' END
$$;

-- ISO 8601 instant with the register zone's offset at that instant.
CREATE FUNCTION accum._ts_text(p_ts timestamptz, p_zone text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT to_char(l, 'YYYY-MM-DD"T"HH24:MI:SS')
        || CASE WHEN extract(microseconds FROM l)::bigint % 1000000 = 0 THEN ''
                ELSE rtrim(to_char(l, '.US'), '0') END
        || CASE WHEN o < interval '0' THEN '-' ELSE '+' END
        || to_char(abs(extract(epoch FROM o))::int / 3600, 'FM00') || ':'
        || to_char(abs(extract(epoch FROM o))::int / 60 % 60, 'FM00')
        || CASE WHEN abs(extract(epoch FROM o))::int % 60 = 0 THEN ''
                ELSE ':' || to_char(abs(extract(epoch FROM o))::int % 60, 'FM00') END
    FROM (SELECT p_ts AT TIME ZONE p_zone AS l,
                 (p_ts AT TIME ZONE p_zone) - (p_ts AT TIME ZONE 'UTC') AS o) s
$$;

CREATE FUNCTION accum._date_text(p_date date) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT to_char(p_date, 'YYYY-MM-DD')
$$;

-- Local start of a day as an instant in a zone.
CREATE FUNCTION accum._day_start(p_day date, p_zone text) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT p_day::timestamp AT TIME ZONE p_zone
$$;

CREATE FUNCTION accum._ceil_to(p_unit text, p_day date) RETURNS date
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN date_trunc(p_unit, p_day::timestamp)::date = p_day THEN p_day
                ELSE (date_trunc(p_unit, p_day::timestamp) + ('1 ' || p_unit)::interval)::date END
$$;

CREATE FUNCTION accum._floor_to(p_unit text, p_day date) RETURNS date
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT date_trunc(p_unit, p_day::timestamp)::date
$$;

-- Splits the instant range [F, T] (NULL = unbounded) for a register zone and its finest
-- kept totals level into: whole buckets read from totals, and at most two partial stretches
-- read from movements. Returns
--   {raw1_from, raw1_to, raw2_from, raw2_to}  instants: movements with
--        raw1_from <= period < raw1_to, and raw2_from <= period <= T
--   plus dates s, e (whole finest buckets [s, e)), and the nested year / month ranges
--   ys, ye (years [ys, ye)), ms, me (months [ms, ys) and [ye, me)), days [s, ms) and [me, e).
CREATE TYPE accum._range_split AS (
    raw1_from timestamptz, raw1_to timestamptz, raw2_from timestamptz, raw2_to timestamptz,
    s date, e date, ms date, me date, ys date, ye date
);

CREATE FUNCTION accum._split_range(p_from timestamptz, p_to timestamptz, p_zone text, p_level text)
RETURNS accum._range_split
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    r accum._range_split;
    v_lo date := date '0001-01-01';
    v_hi date := date '10000-01-01';
    v_fl timestamp;
    v_tl timestamp;
    v_fd date;
    v_td date;
BEGIN
    IF p_from IS NULL OR p_from < accum._day_start(v_lo, p_zone) THEN
        r.s := v_lo;
        r.raw1_from := '-infinity';
    ELSE
        v_fl := p_from AT TIME ZONE p_zone;
        v_fd := accum._ceil_to(p_level, v_fl::date);
        IF accum._day_start(v_fd, p_zone) < p_from THEN  -- F inside the bucket: start at the next one
            v_fd := (date_trunc(p_level, v_fd::timestamp) + ('1 ' || p_level)::interval)::date;
        END IF;
        r.s := least(v_fd, v_hi);
        r.raw1_from := p_from;
    END IF;
    IF p_to IS NULL OR p_to >= accum._day_start(v_hi, p_zone) THEN
        r.e := v_hi;
        r.raw2_to := 'infinity';
    ELSE
        v_tl := p_to AT TIME ZONE p_zone;
        -- the last whole bucket ends at or before T + 1 microsecond
        v_td := accum._floor_to(p_level, (v_tl + interval '1 microsecond')::date);
        IF accum._day_start(v_td, p_zone) > p_to + interval '1 microsecond' THEN
            v_td := (date_trunc(p_level, v_td::timestamp) - ('1 ' || p_level)::interval)::date;
        END IF;
        r.e := greatest(v_td, v_lo);
        r.raw2_to := p_to;
    END IF;
    IF r.e <= r.s THEN
        -- no whole bucket: all from movements
        r.s := v_lo; r.e := v_lo; r.ms := v_lo; r.me := v_lo; r.ys := v_lo; r.ye := v_lo;
        r.raw1_to := 'infinity';
        r.raw2_from := 'infinity';
        IF p_from IS NOT NULL AND p_to IS NOT NULL AND p_from > p_to THEN
            r.raw1_from := 'infinity';
        END IF;
        RETURN r;
    END IF;
    r.raw1_to := accum._day_start(r.s, p_zone);
    r.raw2_from := CASE WHEN r.e >= v_hi THEN 'infinity' ELSE accum._day_start(r.e, p_zone) END;
    IF r.raw1_from = '-infinity' AND r.s = v_lo THEN
        r.raw1_to := '-infinity';
    END IF;
    r.ms := accum._ceil_to('month', r.s);
    r.me := accum._floor_to('month', r.e);
    IF r.ms >= r.me THEN
        r.ms := r.s; r.me := r.s;
    END IF;
    r.ys := accum._ceil_to('year', r.ms);
    r.ye := accum._floor_to('year', r.me);
    IF r.ys >= r.ye THEN
        r.ys := r.ms; r.ye := r.ms;
    END IF;
    RETURN r;
END $$;
