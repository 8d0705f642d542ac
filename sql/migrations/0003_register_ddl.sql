-- 0003_register_ddl: the registry API (SPEC §6) and the generated tables of a register
-- (SPEC §4.5). Validation happens before any DDL, so a rejected call leaves nothing behind.

CREATE FUNCTION accum._get_register(p_func text, p_name text) RETURNS accum._registers
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_reg accum._registers;
BEGIN
    IF p_name IS NULL THEN
        PERFORM accum._raise('22004', p_name, 'register name must not be null');
    END IF;
    SELECT * INTO v_reg FROM accum._registers r WHERE r.name = p_name;
    IF NOT FOUND THEN
        PERFORM accum._raise('42704', p_name, format('register "%s" does not exist', accum._clip(p_name, 64)));
    END IF;
    RETURN v_reg;
END $$;

CREATE FUNCTION accum._check_register_name(p_name text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_name IS NULL THEN
        PERFORM accum._raise('22004', p_name, 'name must not be null');
    END IF;
    IF p_name !~ '^[a-z][a-z0-9_]*$' OR length(p_name) > 32 THEN
        PERFORM accum._raise('42602', p_name,
            'invalid register name: use 1-32 characters a-z, 0-9 and _, starting with a letter');
    END IF;
END $$;

-- Checks a dimension or resource name; p_role is 'dimension' or 'resource'.
CREATE FUNCTION accum._check_field_name(p_register text, p_role text, p_name text) RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF p_name !~ '^[a-z][a-z0-9_]*$' OR length(p_name) > 40 THEN
        PERFORM accum._raise('42602', p_register, format(
            '%s name %s is invalid: use 1-40 characters a-z, 0-9 and _, starting with a letter',
            p_role, to_jsonb(p_name)::text));
    END IF;
    IF EXISTS (SELECT 1 FROM pg_get_keywords() k WHERE k.word = p_name AND k.catcode = 'R') THEN
        PERFORM accum._raise('42602', p_register, format('%s name "%s" is a reserved SQL keyword', p_role, p_name));
    END IF;
    IF p_name = ANY (accum._reserved_columns()) THEN
        PERFORM accum._raise('42939', p_register, format('%s name "%s" is reserved for a generated column', p_role, p_name));
    END IF;
END $$;

-- Validates a JSON object of name -> type; returns {names[], canonical types[]} sorted by
-- name (bytewise).
CREATE FUNCTION accum._check_fields(p_register text, p_role text, p_fields jsonb, p_min integer, p_max integer,
                                    p_param text)
RETURNS text[] LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_names text[] := '{}';
    v_types text[] := '{}';
    v_key text;
    v_val jsonb;
    v_t text[];
BEGIN
    IF p_fields IS NULL THEN
        PERFORM accum._raise('22004', p_register, format('%s must not be null', p_param));
    END IF;
    IF jsonb_typeof(p_fields) <> 'object' THEN
        PERFORM accum._raise('22023', p_register, format('%s must be a JSON object of name -> type, got %s',
            p_param, jsonb_typeof(p_fields)));
    END IF;
    IF (SELECT count(*) FROM jsonb_object_keys(p_fields)) NOT BETWEEN p_min AND p_max THEN
        PERFORM accum._raise('22023', p_register, format('%s must have %s to %s entries, got %s',
            p_param, p_min, p_max, (SELECT count(*) FROM jsonb_object_keys(p_fields))));
    END IF;
    FOR v_key, v_val IN SELECT e.key, e.value FROM jsonb_each(p_fields) e ORDER BY e.key COLLATE "C" LOOP
        PERFORM accum._check_field_name(p_register, p_role, v_key);
        IF jsonb_typeof(v_val) <> 'string' THEN
            PERFORM accum._raise('22023', p_register, format('%s.%s: type must be a string, got %s',
                p_param, v_key, jsonb_typeof(v_val)));
        END IF;
        v_t := accum._parse_type(v_val #>> '{}');
        IF v_t IS NULL
           OR (p_role = 'dimension' AND v_t[2] = 'numeric' AND v_t[3] IS NULL)
           OR (p_role = 'dimension' AND v_t[2] = 'numeric' AND (v_val #>> '{}') !~* ',')
           OR (p_role = 'resource' AND v_t[2] NOT IN ('smallint', 'integer', 'bigint', 'numeric')) THEN
            PERFORM accum._raise('22023', p_register, format('%s.%s: type %s is not allowed for a %s; allowed: %s',
                p_param, v_key, accum._jshow(v_val), p_role, accum._allowed_types_text(p_role)));
        END IF;
        v_names := v_names || v_key;
        v_types := v_types || v_t[1];
    END LOOP;
    RETURN ARRAY[array_to_string(v_names, ','), array_to_string(v_types, ';')];
END $$;

CREATE FUNCTION accum._check_time_zone(p_register text, p_zone text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_name text;
BEGIN
    IF p_zone IS NULL THEN
        PERFORM accum._raise('22004', p_register, 'time_zone must not be null');
    END IF;
    IF lower(p_zone) NOT IN ('localtime', 'posixrules', 'factory') AND lower(p_zone) NOT LIKE 'posix/%' THEN
        SELECT z.name INTO v_name FROM pg_timezone_names z WHERE lower(z.name) = lower(btrim(p_zone))
        ORDER BY z.name = btrim(p_zone) DESC, z.name LIMIT 1;
    END IF;
    IF v_name IS NULL THEN
        PERFORM accum._raise('22023', p_register, format(
            'time_zone %s is not an IANA zone name listed in pg_timezone_names (e.g. UTC, Europe/Berlin)',
            to_jsonb(p_zone)::text));
    END IF;
    RETURN v_name;
END $$;

-- Local start date of the partition period containing p_day.
CREATE FUNCTION accum._partition_start(p_partition_by text, p_day date) RETURNS date
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT date_trunc(p_partition_by, p_day::timestamp)::date
$$;

CREATE FUNCTION accum._partition_next(p_partition_by text, p_start date) RETURNS date
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (p_start + CASE p_partition_by WHEN 'day' THEN interval '1 day' WHEN 'month' THEN interval '1 month'
                                          WHEN 'quarter' THEN interval '3 months' ELSE interval '1 year' END)::date
$$;

CREATE FUNCTION accum._partition_name(p_register text, p_partition_by text, p_start date) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT p_register || '_movements_' || CASE p_partition_by
        WHEN 'day' THEN to_char(p_start, 'YYYY_MM_DD')
        WHEN 'month' THEN to_char(p_start, 'YYYY_MM')
        WHEN 'quarter' THEN to_char(p_start, 'YYYY') || '_q' || extract(quarter FROM p_start)::int
        ELSE to_char(p_start, 'YYYY') END
$$;

-- Creates the partition for the period starting at p_start (local date) unless it exists.
-- Rows of its range waiting in the default partition are moved in before it is attached
-- (SPEC §5.3). Returns 1 when a partition was created.
CREATE FUNCTION accum._ensure_partition(p_reg accum._registers, p_start date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_part text := accum._partition_name(p_reg.name, p_reg.partition_by, p_start);
    v_parent text := p_reg.name || '_movements';
    v_from timestamptz := p_start::timestamp AT TIME ZONE p_reg.time_zone;
    v_to timestamptz := accum._partition_next(p_reg.partition_by, p_start)::timestamp AT TIME ZONE p_reg.time_zone;
    v_has_rows boolean;
BEGIN
    IF p_start < date '0001-01-01' OR p_start >= date '10000-01-01' THEN
        RETURN 0;
    END IF;
    IF to_regclass(format('accum.%I', v_part)) IS NOT NULL THEN
        RETURN 0;
    END IF;
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM accum.%I WHERE period >= %L AND period < %L)',
                   v_parent || '_default', accum._ts_lit(v_from), accum._ts_lit(v_to)) INTO v_has_rows;
    IF NOT v_has_rows THEN
        EXECUTE format('CREATE TABLE accum.%I PARTITION OF accum.%I FOR VALUES FROM (%L) TO (%L)',
                       v_part, v_parent, accum._ts_lit(v_from), accum._ts_lit(v_to));
    ELSE
        -- Build standalone, move the rows (direct partition DML fires no statement trigger of
        -- the parent: the net change is zero), then attach; the CHECK spares the scan.
        EXECUTE format('CREATE TABLE accum.%I (LIKE accum.%I INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING CONSTRAINTS)',
                       v_part, v_parent);
        EXECUTE format('ALTER TABLE accum.%I ADD CONSTRAINT %I CHECK (period >= %L AND period < %L)',
                       v_part, v_part || '_bound', accum._ts_lit(v_from), accum._ts_lit(v_to));
        EXECUTE format('WITH moved AS (DELETE FROM accum.%1$I WHERE period >= %2$L AND period < %3$L RETURNING *) '
                       'INSERT INTO accum.%4$I (%5$s) SELECT %5$s FROM moved',
                       v_parent || '_default', accum._ts_lit(v_from), accum._ts_lit(v_to), v_part,
                       'id, recorded_at, recorder, period, ' || accum._list(p_reg.dim_names || p_reg.res_names, '%1$I'));
        EXECUTE format('ALTER TABLE accum.%I ATTACH PARTITION accum.%I FOR VALUES FROM (%L) TO (%L)',
                       v_parent, v_part, accum._ts_lit(v_from), accum._ts_lit(v_to));
        EXECUTE format('ALTER TABLE accum.%I DROP CONSTRAINT %I', v_part, v_part || '_bound');
    END IF;
    EXECUTE format('REVOKE ALL ON accum.%I FROM PUBLIC', v_part);
    RETURN 1;
END $$;

-- The generated tables of a register (everything but functions and partitions).
CREATE FUNCTION accum._create_tables(p_reg accum._registers) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    r text := p_reg.name;
    v_dims text := accum._gen_columns(p_reg.dim_names, p_reg.dim_types, false);
    v_min timestamptz := make_timestamp(1, 1, 1, 0, 0, 0) AT TIME ZONE p_reg.time_zone;
    v_max timestamptz := make_timestamp(10000, 1, 1, 0, 0, 0) AT TIME ZONE p_reg.time_zone;
    v_checks text := '';
    v_bytes text;
BEGIN
    v_checks := format(', CONSTRAINT %I CHECK (period >= %L AND period < %L)', r || '_mv_period',
                       accum._ts_lit(v_min), accum._ts_lit(v_max));
    IF p_reg.recorder_type = 'text' THEN
        v_checks := v_checks || format(', CONSTRAINT %I CHECK (octet_length(recorder) BETWEEN 1 AND 1024)', r || '_mv_recorder');
    END IF;
    FOR i IN 1 .. array_length(p_reg.dim_names, 1) LOOP
        IF (accum._parse_type(p_reg.dim_types[i]))[2] IN ('text', 'varchar') THEN
            v_checks := v_checks || format(', CONSTRAINT %I CHECK (octet_length(%I) <= 1024)',
                                           r || '_mv_len' || i, p_reg.dim_names[i]);
        END IF;
    END LOOP;
    v_bytes := accum._gen_key_bytes(p_reg, '(%2$s::text)');
    IF v_bytes IS NOT NULL THEN
        v_checks := v_checks || format(', CONSTRAINT %I CHECK (%s <= 2048)', r || '_mv_key', v_bytes);
    END IF;
    FOR i IN 1 .. array_length(p_reg.res_names, 1) LOOP
        IF (accum._parse_type(p_reg.res_types[i]))[2] = 'numeric' THEN
            -- NaN sorts above Infinity, so this also rejects NaN
            v_checks := v_checks || format(', CONSTRAINT %I CHECK (%I > ''-Infinity'' AND %I < ''Infinity'')',
                                           r || '_mv_finite' || i, p_reg.res_names[i], p_reg.res_names[i]);
        END IF;
    END LOOP;

    EXECUTE format('CREATE SEQUENCE accum.%I AS bigint', r || '_movements_id_seq');
    EXECUTE format(
        'CREATE TABLE accum.%I (id bigint NOT NULL DEFAULT nextval(%L::regclass), '
        'recorded_at timestamptz NOT NULL DEFAULT transaction_timestamp(), recorder %s NOT NULL, '
        'period timestamptz NOT NULL, dim_hash bigint GENERATED ALWAYS AS (%s) STORED, %s, %s, '
        'CONSTRAINT %I PRIMARY KEY (id, period)%s) PARTITION BY RANGE (period)',
        r || '_movements', 'accum.' || quote_ident(r || '_movements_id_seq'),
        CASE p_reg.recorder_type WHEN 'text' THEN 'text COLLATE "C"' ELSE p_reg.recorder_type END,
        accum._hash_expr(p_reg.dim_names, p_reg.dim_types, '%1$I'),
        v_dims, accum._gen_columns(p_reg.res_names, p_reg.res_types, false),
        r || '_mv_pkey', v_checks);
    EXECUTE format('ALTER SEQUENCE accum.%I OWNED BY accum.%I.id', r || '_movements_id_seq', r || '_movements');
    EXECUTE format('CREATE INDEX %I ON accum.%I (recorder)', r || '_mv_recorder', r || '_movements');
    EXECUTE format('CREATE INDEX %I ON accum.%I (dim_hash, period)', r || '_mv_hash_period', r || '_movements');
    EXECUTE format('CREATE INDEX %I ON accum.%I (period)', r || '_mv_period', r || '_movements');
    EXECUTE format('CREATE TABLE accum.%I PARTITION OF accum.%I DEFAULT', r || '_movements_default', r || '_movements');
    PERFORM accum._create_derived_tables(p_reg);
END $$;

-- Totals levels, balance cache and (high_write) delta buffer of a register.
CREATE FUNCTION accum._create_derived_tables(p_reg accum._registers) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    r text := p_reg.name;
    v_dims text := accum._gen_columns(p_reg.dim_names, p_reg.dim_types, false);
    v_res_num text := accum._gen_columns(p_reg.res_names, p_reg.res_types, true);
    v_dim_list text := accum._list(p_reg.dim_names, '%1$I');
    v_level text;
BEGIN
    FOREACH v_level IN ARRAY accum._levels(p_reg.totals_period) LOOP
        EXECUTE format('CREATE TABLE accum.%I (dim_hash bigint NOT NULL, period date NOT NULL, %s, %s, '
                       'CONSTRAINT %I PRIMARY KEY (dim_hash, %s, period))',
                       r || '_totals_' || v_level, v_dims, v_res_num, r || '_t' || left(v_level, 1) || '_pkey', v_dim_list);
        EXECUTE format('CREATE INDEX %I ON accum.%I (period)', r || '_t' || left(v_level, 1) || '_period',
                       r || '_totals_' || v_level);
    END LOOP;
    IF p_reg.kind = 'balance' THEN
        EXECUTE format('CREATE TABLE accum.%I (dim_hash bigint NOT NULL, %s, %s, '
                       'last_movement_at timestamptz NOT NULL DEFAULT transaction_timestamp(), '
                       'version bigint NOT NULL DEFAULT 1, CONSTRAINT %I PRIMARY KEY (dim_hash, %s))',
                       r || '_balance_cache', v_dims, v_res_num, r || '_bc_pkey', v_dim_list);
        FOR i IN 1 .. array_length(p_reg.dim_names, 1) LOOP
            EXECUTE format('CREATE INDEX %I ON accum.%I (%I)', r || '_bc_d' || i, r || '_balance_cache',
                           p_reg.dim_names[i]);
        END LOOP;
    END IF;
    IF p_reg.high_write THEN
        PERFORM accum._create_delta(p_reg);
    END IF;
END $$;

CREATE FUNCTION accum._create_delta(p_reg accum._registers) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    r text := p_reg.name;
BEGIN
    -- LOGGED on purpose: pending deltas survive a crash and reach replicas (SPEC §9).
    EXECUTE format('CREATE TABLE accum.%I (id bigint GENERATED ALWAYS AS IDENTITY, '
                   'created_at timestamptz NOT NULL DEFAULT transaction_timestamp(), dim_hash bigint NOT NULL, '
                   '%s, bucket date NOT NULL, %s, CONSTRAINT %I PRIMARY KEY (id))',
                   r || '_delta', accum._gen_columns(p_reg.dim_names, p_reg.dim_types, false),
                   accum._gen_columns(p_reg.res_names, p_reg.res_types, true), r || '_dl_pkey');
    EXECUTE format('CREATE INDEX %I ON accum.%I (dim_hash)', r || '_dl_hash', r || '_delta');
END $$;

-- Kept totals levels, finest first.
CREATE FUNCTION accum._levels(p_totals_period text) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE p_totals_period WHEN 'day' THEN ARRAY['day', 'month', 'year']
                                WHEN 'month' THEN ARRAY['month', 'year']
                                ELSE ARRAY['year'] END
$$;

CREATE FUNCTION accum._create_triggers(p_reg accum._registers) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    r text := p_reg.name;
BEGIN
    EXECUTE format('CREATE TRIGGER accum_ins AFTER INSERT ON accum.%I REFERENCING NEW TABLE AS new_rows '
                   'FOR EACH STATEMENT EXECUTE FUNCTION accum.%I()', r || '_movements', '_' || r || '_ins');
    EXECUTE format('CREATE TRIGGER accum_del AFTER DELETE ON accum.%I REFERENCING OLD TABLE AS old_rows '
                   'FOR EACH STATEMENT EXECUTE FUNCTION accum.%I()', r || '_movements', '_' || r || '_del');
    EXECUTE format('CREATE TRIGGER accum_upd AFTER UPDATE ON accum.%I REFERENCING OLD TABLE AS old_rows '
                   'NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION accum.%I()',
                   r || '_movements', '_' || r || '_upd');
END $$;

-- (Re)generates every per-register function for the register's current definition.
CREATE FUNCTION accum._regenerate(p_name text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_reg accum._registers;
BEGIN
    SELECT * INTO STRICT v_reg FROM accum._registers r WHERE r.name = p_name;
    PERFORM accum._gen_trigger_functions(v_reg);
    PERFORM accum._gen_write_functions(v_reg);
    PERFORM accum._gen_read_functions(v_reg);
    PERFORM accum._gen_maintenance_functions(v_reg);
    PERFORM accum._apply_grants(p_name);
END $$;

CREATE FUNCTION accum.register_create(
    name text, dimensions jsonb, resources jsonb, kind text DEFAULT 'balance',
    totals_period text DEFAULT 'day', partition_by text DEFAULT 'month', high_write boolean DEFAULT false,
    recorder_type text DEFAULT 'text', time_zone text DEFAULT 'UTC')
RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, accum, pg_temp
AS $$
DECLARE
    v_name text := register_create.name;
    v_kind text := lower(btrim(register_create.kind));
    v_tp text := lower(btrim(register_create.totals_period));
    v_pb text := lower(btrim(register_create.partition_by));
    v_rt text := lower(btrim(register_create.recorder_type));
    v_dims text[];
    v_res text[];
    v_reg accum._registers;
    v_zone text;
    v_start date;
BEGIN
    PERFORM accum._check_register_name(v_name);
    IF register_create.kind IS NULL OR register_create.totals_period IS NULL OR register_create.partition_by IS NULL
       OR register_create.high_write IS NULL OR register_create.recorder_type IS NULL THEN
        PERFORM accum._raise('22004', v_name, 'kind, totals_period, partition_by, high_write and recorder_type must not be null');
    END IF;
    IF v_kind = 'ledger' THEN
        PERFORM accum._raise('0A000', v_name, 'kind "ledger" is not supported yet');
    END IF;
    IF v_kind NOT IN ('balance', 'turnover') THEN
        PERFORM accum._raise('22023', v_name, format('kind must be balance or turnover, got %s', to_jsonb(register_create.kind)::text));
    END IF;
    v_dims := accum._check_fields(v_name, 'dimension', register_create.dimensions, 1, 16, 'dimensions');
    v_res := accum._check_fields(v_name, 'resource', register_create.resources, 1, 32, 'resources');
    IF EXISTS (SELECT 1 FROM unnest(string_to_array(v_dims[1], ',')) d JOIN unnest(string_to_array(v_res[1], ',')) s ON d = s) THEN
        PERFORM accum._raise('42701', v_name, format('"%s" is both a dimension and a resource',
            (SELECT min(d) FROM unnest(string_to_array(v_dims[1], ',')) d JOIN unnest(string_to_array(v_res[1], ',')) s ON d = s)));
    END IF;
    IF v_tp NOT IN ('day', 'month', 'year') THEN
        PERFORM accum._raise('22023', v_name, format('totals_period must be day, month or year, got %s', to_jsonb(register_create.totals_period)::text));
    END IF;
    IF v_pb NOT IN ('day', 'month', 'quarter', 'year') THEN
        PERFORM accum._raise('22023', v_name, format('partition_by must be day, month, quarter or year, got %s', to_jsonb(register_create.partition_by)::text));
    END IF;
    IF v_rt NOT IN ('text', 'bigint', 'uuid') THEN
        PERFORM accum._raise('22023', v_name, format('recorder_type must be text, bigint or uuid, got %s', to_jsonb(register_create.recorder_type)::text));
    END IF;
    v_zone := accum._check_time_zone(v_name, register_create.time_zone);
    -- one creator at a time per name, so a concurrent twin gets 42P07, not a DDL clash
    PERFORM pg_advisory_xact_lock(hashtext('accum.register_create'), hashtext(v_name));
    IF EXISTS (SELECT 1 FROM accum._registers r WHERE r.name = v_name) THEN
        PERFORM accum._raise('42P07', v_name, format('register "%s" already exists', v_name));
    END IF;
    INSERT INTO accum._registers (name, kind, dim_names, dim_types, res_names, res_types, totals_period,
                                  partition_by, high_write, recorder_type, time_zone)
    VALUES (v_name, v_kind, string_to_array(v_dims[1], ','), string_to_array(v_dims[2], ';'),
            string_to_array(v_res[1], ','), string_to_array(v_res[2], ';'), v_tp, v_pb,
            register_create.high_write, v_rt, v_zone)
    RETURNING * INTO v_reg;
    PERFORM accum._create_tables(v_reg);
    PERFORM accum._regenerate(v_name);
    PERFORM accum._create_triggers(v_reg);
    -- current period and the next three, in the register zone
    v_start := accum._partition_start(v_pb, (now() AT TIME ZONE v_zone)::date);
    FOR i IN 0 .. 3 LOOP
        PERFORM accum._ensure_partition(v_reg, v_start);
        v_start := accum._partition_next(v_pb, v_start);
    END LOOP;
    PERFORM accum._apply_grants(v_name);
END $$;

CREATE FUNCTION accum.register_drop(name text, force boolean DEFAULT false)
RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, accum, pg_temp
AS $$
DECLARE
    v_reg accum._registers := accum._get_register('register_drop', register_drop.name);
    v_has boolean;
    v_fn record;
BEGIN
    IF register_drop.force IS NULL THEN
        PERFORM accum._raise('22004', v_reg.name, 'force must not be null');
    END IF;
    EXECUTE format('LOCK TABLE accum.%I IN ACCESS EXCLUSIVE MODE', v_reg.name || '_movements');
    IF NOT register_drop.force THEN
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM accum.%I)', v_reg.name || '_movements') INTO v_has;
        IF v_has THEN
            PERFORM accum._raise('55000', v_reg.name, 'register has movements; pass force => true to drop it with them');
        END IF;
    END IF;
    EXECUTE format('DROP TABLE accum.%I CASCADE', v_reg.name || '_movements');
    EXECUTE format('DROP TABLE IF EXISTS accum.%I, accum.%I, accum.%I, accum.%I, accum.%I',
                   v_reg.name || '_totals_day', v_reg.name || '_totals_month', v_reg.name || '_totals_year',
                   v_reg.name || '_balance_cache', v_reg.name || '_delta');
    FOR v_fn IN
        SELECT p.oid::regprocedure AS sig FROM pg_proc p
        WHERE p.pronamespace = 'accum'::regnamespace
          AND (p.proname IN (v_reg.name || '_balance', v_reg.name || '_turnover', v_reg.name || '_movements')
               OR p.proname LIKE '\_' || replace(v_reg.name, '_', '\_') || '\_%')
          AND p.proname ~ ('^_?' || v_reg.name || '_(balance|turnover|movements|ins|del|upd|post|unpost|repost|apply|prelock|merge|verify|rebuild_totals|rebuild_cache)$')
    LOOP
        EXECUTE format('DROP FUNCTION %s', v_fn.sig);
    END LOOP;
    DELETE FROM accum._registers r WHERE r.name = v_reg.name;
END $$;

CREATE FUNCTION accum.register_list()
RETURNS TABLE (name text, kind text, dimensions integer, resources integer, movements_count bigint,
               created_at timestamptz, high_write boolean, time_zone text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, accum, pg_temp
AS $$
DECLARE
    v_reg accum._registers;
    v_count bigint;
BEGIN
    FOR v_reg IN SELECT * FROM accum._registers r ORDER BY r.name COLLATE "C" LOOP
        EXECUTE format('SELECT count(*) FROM accum.%I', v_reg.name || '_movements') INTO v_count;
        name := v_reg.name;
        kind := v_reg.kind;
        dimensions := cardinality(v_reg.dim_names);
        resources := cardinality(v_reg.res_names);
        movements_count := v_count;
        created_at := v_reg.created_at;
        high_write := v_reg.high_write;
        time_zone := v_reg.time_zone;
        RETURN NEXT;
    END LOOP;
END $$;

-- Bounds of a range partition as instants, read from its bound expression.
-- pg_get_expr prints bounds in the session's DateStyle and TimeZone, whose abbreviations may
-- not read back: pin both for the round trip.
CREATE FUNCTION accum._partition_bounds(p_oid oid, OUT is_default boolean, OUT lo timestamptz, OUT hi timestamptz)
LANGUAGE plpgsql STABLE SET datestyle = 'ISO, YMD' SET timezone = 'UTC' AS $$
DECLARE
    v_expr text := pg_get_expr((SELECT c.relpartbound FROM pg_class c WHERE c.oid = p_oid), p_oid);
    v_m text[];
BEGIN
    is_default := v_expr = 'DEFAULT';
    IF NOT is_default THEN
        v_m := regexp_match(v_expr, '^FOR VALUES FROM \(''(.*)''\) TO \(''(.*)''\)$');
        lo := v_m[1]::timestamptz;
        hi := v_m[2]::timestamptz;
    END IF;
END $$;

CREATE FUNCTION accum._partitions_json(p_reg accum._registers) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'name', c.relname,
               'from', CASE WHEN b.is_default THEN NULL ELSE accum._ts_text(b.lo, p_reg.time_zone) END,
               'to', CASE WHEN b.is_default THEN NULL ELSE accum._ts_text(b.hi, p_reg.time_zone) END,
               'is_default', b.is_default)
           ORDER BY b.is_default, b.lo), '[]'::jsonb)
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    CROSS JOIN LATERAL accum._partition_bounds(c.oid) b
    WHERE i.inhparent = format('accum.%I', p_reg.name || '_movements')::regclass
$$;

CREATE FUNCTION accum.register_info(p_name text) RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, accum, pg_temp
AS $$
DECLARE
    v_reg accum._registers := accum._get_register('register_info', p_name);
    v_count bigint;
    v_tables jsonb;
BEGIN
    EXECUTE format('SELECT count(*) FROM accum.%I', v_reg.name || '_movements') INTO v_count;
    v_tables := jsonb_build_object('movements', v_reg.name || '_movements')
        || (SELECT coalesce(jsonb_object_agg('totals_' || l, v_reg.name || '_totals_' || l), '{}')
            FROM unnest(accum._levels(v_reg.totals_period)) l)
        || CASE WHEN v_reg.kind = 'balance' THEN jsonb_build_object('balance_cache', v_reg.name || '_balance_cache')
                ELSE '{}' END
        || CASE WHEN v_reg.high_write THEN jsonb_build_object('delta', v_reg.name || '_delta') ELSE '{}' END;
    RETURN jsonb_build_object(
        'name', v_reg.name,
        'kind', v_reg.kind,
        'dimensions', (SELECT jsonb_object_agg(n, t) FROM unnest(v_reg.dim_names, v_reg.dim_types) u(n, t)),
        'resources', (SELECT jsonb_object_agg(n, t) FROM unnest(v_reg.res_names, v_reg.res_types) u(n, t)),
        'totals_period', v_reg.totals_period,
        'partition_by', v_reg.partition_by,
        'high_write', v_reg.high_write,
        'recorder_type', v_reg.recorder_type,
        'time_zone', v_reg.time_zone,
        'created_at', accum._ts_text(v_reg.created_at, v_reg.time_zone),
        'updated_at', accum._ts_text(v_reg.updated_at, v_reg.time_zone),
        'movements_count', v_count,
        'tables', v_tables,
        'partitions', accum._partitions_json(v_reg));
END $$;
