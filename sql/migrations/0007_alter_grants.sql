-- 0007_alter_grants: register_alter (SPEC §6) and privileges (SPEC §3.3).

-- (Re)applies grants to the group roles that exist; p_name NULL = schema-wide objects and
-- every register. Role memberships (reader in writer in admin) are the migrations runner's
-- job: it holds CREATEROLE, the owner may not. Derived tables and the delta buffer get no write grant: only the owner's
-- trigger and API functions write them.
CREATE FUNCTION accum._apply_grants(p_name text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_reader boolean := EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'accum_reader');
    v_writer boolean := EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'accum_writer');
    v_admin boolean := EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'accum_admin');
    v_reg accum._registers;
    v_fn record;
    v_t text;
BEGIN
    -- nothing is executable by PUBLIC, whichever role created it
    FOR v_fn IN SELECT p.oid::regprocedure AS sig FROM pg_proc p WHERE p.pronamespace = 'accum'::regnamespace LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', v_fn.sig);
    END LOOP;
    IF v_reader THEN
        EXECUTE 'GRANT USAGE ON SCHEMA accum TO accum_reader';
        -- reads run as the caller (SECURITY INVOKER), so readers need the helpers they call
        FOR v_fn IN
            SELECT p.oid::regprocedure AS sig FROM pg_proc p
            WHERE p.pronamespace = 'accum'::regnamespace
              AND (p.proname IN ('register_list', 'register_info', 'register_stats', 'register_partitions',
                                 'register_verify', 'register_delta_status')
                   OR (p.proname LIKE '\_%' AND NOT p.prosecdef AND p.proname NOT LIKE '\_gen%'
                       AND p.proname NOT IN ('_apply_grants', '_create_tables', '_create_delta', '_create_triggers',
                                             '_regenerate', '_ensure_partition', '_rebuild_locks'))
                   OR EXISTS (SELECT 1 FROM accum._registers g
                              WHERE p.proname IN (g.name || '_balance', g.name || '_turnover', g.name || '_movements')))
        LOOP
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO accum_reader', v_fn.sig);
        END LOOP;
        EXECUTE 'GRANT SELECT ON accum._registers TO accum_reader';
        IF to_regclass('accum.schema_migrations') IS NOT NULL THEN
            EXECUTE 'GRANT SELECT ON accum.schema_migrations TO accum_reader';
        END IF;
    END IF;
    IF v_writer THEN
        FOR v_fn IN
            SELECT p.oid::regprocedure AS sig FROM pg_proc p
            WHERE p.pronamespace = 'accum'::regnamespace
              AND p.proname IN ('register_post', 'register_unpost', 'register_repost', 'register_apply', 'register_merge',
                                '_force_delta_merge', 'register_create_partitions')
        LOOP
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO accum_writer', v_fn.sig);
        END LOOP;
        EXECUTE 'GRANT SELECT, INSERT, UPDATE, DELETE ON accum.consumer_offsets, accum.consumer_commands TO accum_writer';
    END IF;
    IF v_admin THEN
        FOR v_fn IN
            SELECT p.oid::regprocedure AS sig FROM pg_proc p
            WHERE p.pronamespace = 'accum'::regnamespace
              AND p.proname IN ('register_create', 'register_alter', 'register_drop', 'register_rebuild_totals',
                                'register_rebuild_cache')
        LOOP
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO accum_admin', v_fn.sig);
        END LOOP;
    END IF;
    FOR v_reg IN SELECT * FROM accum._registers g WHERE p_name IS NULL OR g.name = p_name LOOP
        FOR v_t IN SELECT c.relname FROM pg_class c
                   WHERE c.relnamespace = 'accum'::regnamespace AND c.relkind IN ('r', 'p')
                     AND c.relname IN (v_reg.name || '_movements', v_reg.name || '_totals_day', v_reg.name || '_totals_month',
                                       v_reg.name || '_totals_year', v_reg.name || '_balance_cache', v_reg.name || '_delta')
        LOOP
            EXECUTE format('REVOKE ALL ON accum.%I FROM PUBLIC', v_t);
            IF v_reader THEN
                EXECUTE format('GRANT SELECT ON accum.%I TO accum_reader', v_t);
            END IF;
        END LOOP;
        IF v_writer THEN
            EXECUTE format('GRANT INSERT, UPDATE, DELETE ON accum.%I TO accum_writer', v_reg.name || '_movements');
            EXECUTE format('GRANT USAGE ON SEQUENCE accum.%I TO accum_writer', v_reg.name || '_movements_id_seq');
        END IF;
    END LOOP;
END $$;

-- Adds dimensions (with a backfill value for the existing movements) and resources, or
-- switches high-write mode. Nothing else can change (0A000 is reserved for that; the
-- signature has no place for it).
CREATE FUNCTION accum.register_alter(p_name text, add_dimensions jsonb DEFAULT NULL, add_resources jsonb DEFAULT NULL,
                                     high_write boolean DEFAULT NULL, backfill jsonb DEFAULT NULL)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, accum, pg_temp AS $$
DECLARE
    v_reg accum._registers := accum._get_register('register_alter', p_name);
    r text;
    v_new_dims text[];
    v_new_res text[];
    v_names text[];
    v_types text[];
    v_t text[];
    v_err text[];
    v_val jsonb;
    v_n bigint;
    v_dims_changed boolean := false;
BEGIN
    r := v_reg.name;
    IF register_alter.add_dimensions IS NOT NULL THEN
        v_new_dims := accum._check_fields(r, 'dimension', register_alter.add_dimensions, 1, 16, 'add_dimensions');
        IF cardinality(v_reg.dim_names) + cardinality(string_to_array(v_new_dims[1], ',')) > 16 THEN
            PERFORM accum._raise('22023', r, 'a register has at most 16 dimensions');
        END IF;
        IF register_alter.backfill IS NULL OR jsonb_typeof(register_alter.backfill) <> 'object' THEN
            PERFORM accum._raise('22023', r, 'backfill must be an object with a value for every added dimension');
        END IF;
        IF register_alter.backfill - string_to_array(v_new_dims[1], ',') <> '{}'::jsonb THEN
            PERFORM accum._raise('22023', r, format('backfill.%s: not an added dimension',
                (SELECT min(k) FROM jsonb_object_keys(register_alter.backfill - string_to_array(v_new_dims[1], ',')) k)));
        END IF;
    END IF;
    IF register_alter.add_resources IS NOT NULL THEN
        v_new_res := accum._check_fields(r, 'resource', register_alter.add_resources, 1, 32, 'add_resources');
        IF cardinality(v_reg.res_names) + cardinality(string_to_array(v_new_res[1], ',')) > 32 THEN
            PERFORM accum._raise('22023', r, 'a register has at most 32 resources');
        END IF;
    END IF;
    v_names := v_reg.dim_names || v_reg.res_names || coalesce(string_to_array(v_new_dims[1], ','), '{}')
               || coalesce(string_to_array(v_new_res[1], ','), '{}');
    IF (SELECT count(DISTINCT n) FROM unnest(v_names) n) <> cardinality(v_names) THEN
        PERFORM accum._raise('42701', r, format('"%s" is already a dimension or resource',
            (SELECT n FROM unnest(v_names) n GROUP BY n HAVING count(*) > 1 ORDER BY n LIMIT 1)));
    END IF;
    -- backfill values are checked like movement values
    IF v_new_dims IS NOT NULL THEN
        FOR i IN 1 .. cardinality(string_to_array(v_new_dims[1], ',')) LOOP
            v_val := register_alter.backfill -> (string_to_array(v_new_dims[1], ','))[i];
            v_t := accum._parse_type((string_to_array(v_new_dims[2], ';'))[i]);
            IF v_val IS NULL OR jsonb_typeof(v_val) = 'null' THEN
                PERFORM accum._raise('22023', r, format('backfill.%s: a value is required', (string_to_array(v_new_dims[1], ','))[i]));
            END IF;
            EXECUTE 'SELECT ' || accum._gen_value_check(v_t, '$1', quote_literal('backfill.' || (string_to_array(v_new_dims[1], ','))[i]), 'dimension')
                INTO v_err USING v_val;
            IF v_err IS NOT NULL THEN
                v_err[1] := '22023';
                PERFORM accum._raise_err(r, v_err);
            END IF;
        END LOOP;
    END IF;

    -- Writers wait from here on; readers keep reading until the DDL below needs its lock.
    EXECUTE format('LOCK TABLE accum.%I IN EXCLUSIVE MODE', r || '_movements');
    PERFORM pg_advisory_xact_lock(-v_reg.id, 0);

    IF v_new_res IS NOT NULL THEN
        FOR i IN 1 .. cardinality(string_to_array(v_new_res[1], ',')) LOOP
            v_names := ARRAY[(string_to_array(v_new_res[1], ','))[i]];
            v_t := accum._parse_type((string_to_array(v_new_res[2], ';'))[i]);
            EXECUTE format('ALTER TABLE accum.%I ADD COLUMN %I %s NOT NULL DEFAULT 0', r || '_movements', v_names[1], v_t[1]);
            EXECUTE format('ALTER TABLE accum.%I ALTER COLUMN %I DROP DEFAULT', r || '_movements', v_names[1]);
            IF v_t[2] = 'numeric' THEN
                EXECUTE format('ALTER TABLE accum.%I ADD CONSTRAINT %I CHECK (%I > ''-Infinity'' AND %I < ''Infinity'')',
                               r || '_movements', r || '_mv_finite' || (cardinality(v_reg.res_names) + i), v_names[1], v_names[1]);
            END IF;
            FOR v_types IN SELECT ARRAY[c.relname] FROM pg_class c WHERE c.relnamespace = 'accum'::regnamespace
                             AND c.relname IN (r || '_totals_day', r || '_totals_month', r || '_totals_year',
                                               r || '_balance_cache', r || '_delta') LOOP
                EXECUTE format('ALTER TABLE accum.%I ADD COLUMN %I numeric NOT NULL DEFAULT 0', v_types[1], v_names[1]);
                EXECUTE format('ALTER TABLE accum.%I ALTER COLUMN %I DROP DEFAULT', v_types[1], v_names[1]);
            END LOOP;
        END LOOP;
        SELECT array_agg(n ORDER BY n COLLATE "C"), array_agg(t ORDER BY n COLLATE "C") INTO v_names, v_types
        FROM unnest(v_reg.res_names || string_to_array(v_new_res[1], ','), v_reg.res_types || string_to_array(v_new_res[2], ';')) u(n, t);
        v_reg.res_names := v_names;
        v_reg.res_types := v_types;
    END IF;

    IF v_new_dims IS NOT NULL THEN
        v_dims_changed := true;
        -- pending deltas are derived data: the rebuild below recomputes everything
        FOR i IN 1 .. cardinality(string_to_array(v_new_dims[1], ',')) LOOP
            v_names := ARRAY[(string_to_array(v_new_dims[1], ','))[i]];
            v_t := accum._parse_type((string_to_array(v_new_dims[2], ';'))[i]);
            EXECUTE format('ALTER TABLE accum.%I ADD COLUMN %I %s NOT NULL DEFAULT %L', r || '_movements', v_names[1],
                           accum._col_type(v_t), register_alter.backfill ->> v_names[1]);
            EXECUTE format('ALTER TABLE accum.%I ALTER COLUMN %I DROP DEFAULT', r || '_movements', v_names[1]);
            IF v_t[2] IN ('text', 'varchar') THEN
                EXECUTE format('ALTER TABLE accum.%I ADD CONSTRAINT %I CHECK (octet_length(%I) <= 1024)', r || '_movements',
                               r || '_mv_len' || (cardinality(v_reg.dim_names) + i), v_names[1]);
            END IF;
        END LOOP;
        SELECT array_agg(n ORDER BY n COLLATE "C"), array_agg(t ORDER BY n COLLATE "C") INTO v_names, v_types
        FROM unnest(v_reg.dim_names || string_to_array(v_new_dims[1], ','), v_reg.dim_types || string_to_array(v_new_dims[2], ';')) u(n, t);
        v_reg.dim_names := v_names;
        v_reg.dim_types := v_types;
        -- dim_hash covers every dimension: re-create it (rewrites the movements) and its index
        EXECUTE format('ALTER TABLE accum.%I DROP COLUMN dim_hash', r || '_movements');
        EXECUTE format('ALTER TABLE accum.%I ADD COLUMN dim_hash bigint GENERATED ALWAYS AS (%s) STORED', r || '_movements',
                       accum._hash_expr(v_reg.dim_names, v_reg.dim_types, '%1$I'));
        EXECUTE format('CREATE INDEX %I ON accum.%I (dim_hash, period)', r || '_mv_hash_period', r || '_movements');
        EXECUTE format('DROP TABLE IF EXISTS accum.%I, accum.%I, accum.%I, accum.%I, accum.%I',
                       r || '_totals_day', r || '_totals_month', r || '_totals_year', r || '_balance_cache', r || '_delta');
    END IF;

    IF register_alter.high_write IS NOT NULL AND register_alter.high_write <> v_reg.high_write THEN
        IF NOT register_alter.high_write AND NOT v_dims_changed THEN
            -- fold every pending delta in before the buffer goes away
            LOOP
                EXECUTE format('SELECT accum.%I(1000000, ''0'')', '_' || r || '_merge') INTO v_n;
                EXIT WHEN v_n = 0;
            END LOOP;
            EXECUTE format('DROP TABLE accum.%I', r || '_delta');
        END IF;
        v_reg.high_write := register_alter.high_write;
    END IF;

    UPDATE accum._registers g SET dim_names = v_reg.dim_names, dim_types = v_reg.dim_types, res_names = v_reg.res_names,
                                  res_types = v_reg.res_types, high_write = v_reg.high_write, updated_at = now()
    WHERE g.name = r;

    IF v_dims_changed THEN
        -- re-create the derived tables for the new key and fill them from the movements
        PERFORM accum._create_derived_tables(v_reg);
        PERFORM accum._regenerate(r);
        EXECUTE format('SELECT accum.%I()', '_' || r || '_rebuild_totals');
        IF v_reg.kind = 'balance' THEN
            EXECUTE format('SELECT accum.%I(NULL)', '_' || r || '_rebuild_cache');
        END IF;
    ELSE
        IF v_reg.high_write AND to_regclass(format('accum.%I', r || '_delta')) IS NULL THEN
            PERFORM accum._create_delta(v_reg);
        END IF;
        PERFORM accum._regenerate(r);
    END IF;
    PERFORM accum._apply_grants(r);
END $$;
