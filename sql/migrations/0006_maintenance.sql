-- 0006_maintenance: verify, rebuilds, merge of the delta buffer, statistics and partition
-- maintenance (SPEC §9, §10). Generated per-register functions keep static SQL; the public
-- functions dispatch.

CREATE FUNCTION accum._gen_maintenance_functions(p_reg accum._registers) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    r text := p_reg.name;
    v_head text := 'LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, accum, pg_temp AS %L';
    v_dims text := accum._list(p_reg.dim_names, '%1$I');
    v_dims_x text := accum._list(p_reg.dim_names, 'x.%1$I');
    v_res text := accum._list(p_reg.res_names, '%1$I');
    v_sums text := accum._list(p_reg.res_names, 'sum(%1$I) AS %1$I');
    v_nonzero text := 'NOT (' || accum._list(p_reg.res_names, 'sum(%1$I) = 0', ' AND ') || ')';
    v_levels text[] := accum._levels(p_reg.totals_period);
    v_hash text := accum._hash_expr(p_reg.dim_names, p_reg.dim_types, '%1$I');
    v_using text := accum._list(p_reg.dim_names, '%1$I') ;
    v_parts text[] := '{}';
    v_ctes text := '';
    v_level text;
    v_body text;
    v_cmp text;
    v_delta_src text;
BEGIN
    -- merge: oldest committed delta rows first, folded into totals and cache in lock order
    IF p_reg.high_write THEN
        v_body := format($f$
#variable_conflict use_column
DECLARE v$rows accum.%1$I[]; v$zero bigint[];
BEGIN
    PERFORM pg_advisory_xact_lock(%2$s, 0);
    WITH c AS (DELETE FROM accum.%1$I "d$" WHERE "d$".id IN (
                   SELECT q.id FROM accum.%1$I q WHERE q.created_at <= clock_timestamp() - p$min_age ORDER BY q.id LIMIT p$max)
               RETURNING "d$")
    SELECT array_agg(c."d$") INTO v$rows FROM c;
    IF v$rows IS NULL THEN RETURN 0; END IF;
    %3$s
    RETURN cardinality(v$rows);
END$f$,
            r || '_delta', -p_reg.id,
            accum._gen_apply_changes(p_reg, format('SELECT u.dim_hash, u.bucket AS period, %s, %s FROM unnest(v$rows) u',
                accum._list(p_reg.dim_names, 'u.%1$I'), accum._list(p_reg.res_names, 'u.%1$I')), true));
        EXECUTE format('CREATE OR REPLACE FUNCTION accum.%I(p$max integer, p$min_age interval) RETURNS bigint ' || v_head,
                       '_' || r || '_merge', v_body);
    END IF;

    -- verify: one statement, one snapshot; values compared per combination and bucket in
    -- the register zone; all-zero groups count as absent on both sides.
    v_ctes := format('mv AS MATERIALIZED (SELECT %1$s, (m.period AT TIME ZONE %2$L)::date AS "b$", %3$s '
                     'FROM accum.%4$I m GROUP BY %1$s, (m.period AT TIME ZONE %2$L)::date)',
                     accum._list(p_reg.dim_names, 'm.%1$I'), p_reg.time_zone,
                     accum._list(p_reg.res_names, 'sum(m.%1$I) AS %1$I'), r || '_movements');
    FOREACH v_level IN ARRAY v_levels LOOP
        v_delta_src := CASE WHEN p_reg.high_write THEN format(' UNION ALL SELECT %s, date_trunc(%L, bucket::timestamp)::date AS "b$", %s FROM accum.%I',
                                                             v_dims, v_level, v_res, r || '_delta') ELSE '' END;
        v_ctes := v_ctes || format(
            ', e_%1$s AS (SELECT %2$s, date_trunc(%1$L, mv."b$"::timestamp)::date AS "b$", %3$s FROM mv GROUP BY %2$s, date_trunc(%1$L, mv."b$"::timestamp)::date HAVING %4$s)'
            ', a_%1$s AS (SELECT %2$s, s."b$", %3$s FROM (SELECT %2$s, period AS "b$", %5$s FROM accum.%6$I%7$s) s GROUP BY %2$s, s."b$" HAVING %4$s)',
            v_level, v_dims, v_sums, v_nonzero, v_res, r || '_totals_' || v_level, v_delta_src);
        v_parts := v_parts || format('SELECT %L AS check_type, "b$" AS period, %s FROM e_%s e FULL JOIN a_%s a USING (%s, "b$")',
            'totals_' || v_level, '%s', v_level, v_level, v_using);
    END LOOP;
    IF p_reg.kind = 'balance' THEN
        v_delta_src := CASE WHEN p_reg.high_write THEN format(' UNION ALL SELECT %s, %s FROM accum.%I', v_dims, v_res, r || '_delta') ELSE '' END;
        v_ctes := v_ctes || format(
            ', e_cache AS (SELECT %1$s, %2$s FROM mv GROUP BY %1$s HAVING %3$s)'
            ', a_cache AS (SELECT %1$s, %2$s FROM (SELECT %1$s, %4$s FROM accum.%5$I%6$s) s GROUP BY %1$s HAVING %3$s)',
            v_dims, v_sums, v_nonzero, v_res, r || '_balance_cache', v_delta_src);
        v_parts := array_prepend(format('SELECT %L AS check_type, NULL::date AS period, %s FROM e_cache e FULL JOIN a_cache a USING (%s)',
            'balance_cache', '%s', v_using), v_parts);
    END IF;
    -- the common select list of every comparison (merged USING columns are unqualified)
    v_cmp := format('%1$s AS dim_hash, %2$s AS expected, %3$s AS actual, '
                    'CASE WHEN e.%4$I IS NULL THEN ''ORPHAN_IN_'' || ''@'' WHEN a.%4$I IS NULL THEN ''MISSING_IN_'' || ''@'' '
                    'WHEN (%5$s) THEN ''MISMATCH'' ELSE ''OK'' END AS status, %6$s AS dimensions',
        v_hash,
        'CASE WHEN e.' || quote_ident(p_reg.res_names[1]) || ' IS NULL THEN NULL ELSE '
            || accum._gen_res_object(p_reg.res_names, p_reg.res_types, 'e.%I') || ' END',
        'CASE WHEN a.' || quote_ident(p_reg.res_names[1]) || ' IS NULL THEN NULL ELSE '
            || accum._gen_res_object(p_reg.res_names, p_reg.res_types, 'a.%I') || ' END',
        p_reg.res_names[1],
        accum._list(p_reg.res_names, 'e.%1$I <> a.%1$I', ' OR '),
        accum._gen_dim_object(p_reg.dim_names, p_reg.dim_types, '%I'));
    FOR i IN 1 .. cardinality(v_parts) LOOP
        v_parts[i] := replace(format(v_parts[i], v_cmp), '@',
                              CASE WHEN v_parts[i] LIKE '%e_cache%' THEN 'CACHE' ELSE 'TOTALS' END);
    END LOOP;
    -- stored dim_hash against a fresh one, for movements and every derived table
    v_parts := v_parts || format(
        'SELECT ''dim_hash'', NULL::date, x.dim_hash, to_jsonb(x."fresh$"), to_jsonb(x.dim_hash), ''MISMATCH'', %s '
        'FROM (SELECT DISTINCT u.dim_hash, %s AS "fresh$", %s FROM (%s) u) x WHERE x.dim_hash <> x."fresh$"',
        accum._gen_dim_object(p_reg.dim_names, p_reg.dim_types, 'x.%I'), v_hash, v_dims,
        (SELECT string_agg(format('SELECT dim_hash, %s FROM accum.%I', v_dims, t), ' UNION ALL ')
         FROM unnest(ARRAY[r || '_movements'] || (SELECT array_agg(r || '_totals_' || l) FROM unnest(v_levels) l)
                     || CASE WHEN p_reg.kind = 'balance' THEN ARRAY[r || '_balance_cache'] ELSE '{}' END
                     || CASE WHEN p_reg.high_write THEN ARRAY[r || '_delta'] ELSE '{}' END) t));
    v_body := format($f$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH %1$s
    SELECT q.check_type, q.dim_hash, q.period, q.expected, q.actual, q.status, q.dimensions
    FROM (%2$s) q(check_type, period, dim_hash, expected, actual, status, dimensions)
    WHERE NOT p$problems_only OR q.status <> 'OK'
    ORDER BY array_position(ARRAY['balance_cache', 'totals_day', 'totals_month', 'totals_year', 'dim_hash'], q.check_type),
             q.dim_hash, q.period, q.dimensions;
END$f$, v_ctes, array_to_string(v_parts, ' UNION ALL '));
    EXECUTE format('CREATE OR REPLACE FUNCTION accum.%I(p$problems_only boolean) '
                   'RETURNS TABLE (check_type text, dim_hash bigint, period date, expected jsonb, actual jsonb, '
                   'status text, dimensions jsonb) LANGUAGE plpgsql STABLE AS %L', '_' || r || '_verify', v_body);

    -- rebuilds: recompute from movements; writers wait (SHARE lock on movements), readers do not
    v_body := format($f$
#variable_conflict use_column
DECLARE v$n bigint := 0; v$k bigint;
BEGIN
    %1$s
    %2$s
    RETURN v$n;
END$f$,
        CASE WHEN p_reg.high_write THEN format('PERFORM accum.%I(2147483647, ''0'');', '_' || r || '_merge') ELSE '' END,
        (SELECT string_agg(format(
            'DELETE FROM accum.%1$I; INSERT INTO accum.%1$I (dim_hash, period, %2$s, %3$s) '
            'SELECT dim_hash, %4$s, %2$s, %5$s FROM accum.%6$I GROUP BY dim_hash, %2$s, 2 HAVING %7$s; '
            'GET DIAGNOSTICS v$k = ROW_COUNT; v$n := v$n + v$k;',
            r || '_totals_' || l, v_dims, v_res, accum._gen_bucket(p_reg, l, 'period'), v_sums, r || '_movements', v_nonzero), ' ')
         FROM unnest(v_levels) l));
    EXECUTE format('CREATE OR REPLACE FUNCTION accum.%I() RETURNS bigint ' || v_head, '_' || r || '_rebuild_totals', v_body);
    IF p_reg.kind = 'balance' THEN
        v_body := format($f$
#variable_conflict use_column
DECLARE v$n bigint;
BEGIN
    %1$s
    DELETE FROM accum.%2$I c WHERE p$hash IS NULL OR c.dim_hash = p$hash;
    INSERT INTO accum.%2$I (dim_hash, %3$s, %4$s)
    SELECT dim_hash, %3$s, %5$s FROM accum.%6$I m WHERE p$hash IS NULL OR m.dim_hash = p$hash
    GROUP BY dim_hash, %3$s HAVING %7$s;
    GET DIAGNOSTICS v$n = ROW_COUNT;
    RETURN v$n;
END$f$,
            CASE WHEN p_reg.high_write THEN format('PERFORM accum.%I(2147483647, ''0'');', '_' || r || '_merge') ELSE '' END,
            r || '_balance_cache', v_dims, v_res, v_sums, r || '_movements', v_nonzero);
        EXECUTE format('CREATE OR REPLACE FUNCTION accum.%I(p$hash bigint) RETURNS bigint ' || v_head,
                       '_' || r || '_rebuild_cache', v_body);
    END IF;
END $$;

-- ---------------------------------------------------------------------------
-- Public maintenance API
-- ---------------------------------------------------------------------------

CREATE FUNCTION accum.register_verify(p_name text, problems_only boolean DEFAULT false)
RETURNS TABLE (check_type text, dim_hash bigint, period date, expected jsonb, actual jsonb, status text, dimensions jsonb)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, accum, pg_temp AS $$
DECLARE
    v_reg accum._registers := accum._get_register('register_verify', p_name);
BEGIN
    RETURN QUERY EXECUTE format('SELECT * FROM accum.%I($1)', '_' || v_reg.name || '_verify')
        USING coalesce(register_verify.problems_only, false);
END $$;

-- Writers wait for rebuilds: SHARE on the movements blocks their ROW EXCLUSIVE but not
-- readers; the merge lock keeps the compactor out meanwhile.
CREATE FUNCTION accum._rebuild_locks(p_reg accum._registers) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('LOCK TABLE accum.%I IN SHARE MODE', p_reg.name || '_movements');
    PERFORM pg_advisory_xact_lock(-p_reg.id, 0);
END $$;

CREATE FUNCTION accum.register_rebuild_totals(p_name text) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, accum, pg_temp AS $$
DECLARE
    v_reg accum._registers := accum._get_register('register_rebuild_totals', p_name);
    v_n bigint;
BEGIN
    PERFORM accum._rebuild_locks(v_reg);
    EXECUTE format('SELECT accum.%I()', '_' || v_reg.name || '_rebuild_totals') INTO v_n;
    RETURN v_n;
END $$;

CREATE FUNCTION accum.register_rebuild_cache(p_name text, p_dim_hash bigint DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, accum, pg_temp AS $$
DECLARE
    v_reg accum._registers := accum._get_register('register_rebuild_cache', p_name);
    v_n bigint;
BEGIN
    IF v_reg.kind <> 'balance' THEN
        PERFORM accum._raise('42809', v_reg.name, 'a turnover register has no balance cache');
    END IF;
    PERFORM accum._rebuild_locks(v_reg);
    EXECUTE format('SELECT accum.%I($1)', '_' || v_reg.name || '_rebuild_cache') INTO v_n USING p_dim_hash;
    RETURN v_n;
END $$;

CREATE FUNCTION accum.register_merge(name text DEFAULT NULL, max_rows integer DEFAULT 10000,
                                     min_age interval DEFAULT '0')
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, accum, pg_temp AS $$
DECLARE
    v_reg accum._registers;
    v_total bigint := 0;
    v_n bigint;
BEGIN
    IF register_merge.max_rows IS NULL OR register_merge.max_rows < 1 THEN
        PERFORM accum._raise('22023', register_merge.name, format('max_rows must be at least 1, got %s',
            coalesce(register_merge.max_rows::text, 'null')));
    END IF;
    IF register_merge.min_age IS NULL OR register_merge.min_age < interval '0' THEN
        PERFORM accum._raise('22023', register_merge.name, format('min_age must not be negative, got %s',
            coalesce(register_merge.min_age::text, 'null')));
    END IF;
    IF register_merge.name IS NOT NULL THEN
        v_reg := accum._get_register('register_merge', register_merge.name);
    END IF;
    FOR v_reg IN SELECT * FROM accum._registers g
                 WHERE g.high_write AND (register_merge.name IS NULL OR g.name = register_merge.name)
                 ORDER BY g.name COLLATE "C" LOOP
        EXECUTE format('SELECT accum.%I($1, $2)', '_' || v_reg.name || '_merge') INTO v_n
            USING register_merge.max_rows, register_merge.min_age;
        v_total := v_total + v_n;
    END LOOP;
    RETURN v_total;
END $$;

CREATE FUNCTION accum._force_delta_merge(p_max_age interval DEFAULT '0 seconds', p_batch_size integer DEFAULT 1000000)
RETURNS integer LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, accum, pg_temp AS $$
    SELECT accum.register_merge(NULL, p_batch_size, p_max_age)::integer
$$;

CREATE FUNCTION accum.register_delta_status(name text DEFAULT NULL)
RETURNS TABLE (register text, pending_rows bigint, oldest_created_at timestamptz, lag_seconds double precision)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, accum, pg_temp AS $$
DECLARE
    v_reg accum._registers;
BEGIN
    IF register_delta_status.name IS NOT NULL THEN
        v_reg := accum._get_register('register_delta_status', register_delta_status.name);
    END IF;
    FOR v_reg IN SELECT * FROM accum._registers g
                 WHERE g.high_write AND (register_delta_status.name IS NULL OR g.name = register_delta_status.name)
                 ORDER BY g.name COLLATE "C" LOOP
        register := v_reg.name;
        EXECUTE format('SELECT count(*), min(created_at) FROM accum.%I', v_reg.name || '_delta')
            INTO pending_rows, oldest_created_at;
        lag_seconds := coalesce(extract(epoch FROM clock_timestamp() - oldest_created_at)::double precision, 0);
        RETURN NEXT;
    END LOOP;
END $$;

-- SECURITY DEFINER: it counts the default partition directly, and partitions grant nothing.
CREATE FUNCTION accum.register_stats(p_name text) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, accum, pg_temp AS $$
DECLARE
    v_reg accum._registers := accum._get_register('register_stats', p_name);
    r text := v_reg.name;
    v_parent regclass := format('accum.%I', r || '_movements')::regclass;
    v_out jsonb;
    v_n bigint;
    v_oldest timestamptz;
    v_level text;
    v_sizes jsonb;
BEGIN
    EXECUTE format('SELECT count(*) FROM accum.%I', r || '_movements') INTO v_n;
    v_out := jsonb_build_object('movements_count', v_n,
        'partitions_count', (SELECT count(*) FROM pg_inherits i WHERE i.inhparent = v_parent));
    EXECUTE format('SELECT count(*) FROM accum.%I', r || '_movements_default') INTO v_n;
    v_out := v_out || jsonb_build_object('default_partition_rows', v_n);
    v_sizes := jsonb_build_object('movements',
        (SELECT coalesce(sum(pg_total_relation_size(i.inhrelid)), 0) FROM pg_inherits i WHERE i.inhparent = v_parent));
    v_n := NULL;
    IF v_reg.kind = 'balance' THEN
        EXECUTE format('SELECT count(*) FROM accum.%I', r || '_balance_cache') INTO v_n;
        v_sizes := v_sizes || jsonb_build_object('balance_cache', pg_total_relation_size(format('accum.%I', r || '_balance_cache')));
    END IF;
    v_out := v_out || jsonb_build_object('cache_rows', v_n);
    FOREACH v_level IN ARRAY ARRAY['day', 'month', 'year'] LOOP
        v_n := NULL;
        IF v_level = ANY (accum._levels(v_reg.totals_period)) THEN
            EXECUTE format('SELECT count(*) FROM accum.%I', r || '_totals_' || v_level) INTO v_n;
            v_sizes := v_sizes || jsonb_build_object('totals_' || v_level,
                                                     pg_total_relation_size(format('accum.%I', r || '_totals_' || v_level)));
        END IF;
        v_out := v_out || jsonb_build_object('totals_' || v_level || '_rows', v_n);
    END LOOP;
    v_n := 0;
    IF v_reg.high_write THEN
        EXECUTE format('SELECT count(*), min(created_at) FROM accum.%I', r || '_delta') INTO v_n, v_oldest;
        v_sizes := v_sizes || jsonb_build_object('delta', pg_total_relation_size(format('accum.%I', r || '_delta')));
    END IF;
    RETURN v_out || jsonb_build_object('delta_pending_rows', v_n,
        'delta_oldest_at', CASE WHEN v_oldest IS NOT NULL THEN accum._ts_text(v_oldest, v_reg.time_zone) END,
        'table_sizes', v_sizes);
END $$;

CREATE FUNCTION accum.register_partitions(p_name text)
RETURNS TABLE (partition_name text, from_date timestamptz, to_date timestamptz, row_count bigint, total_size text,
               is_default boolean)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, accum, pg_temp AS $$
DECLARE
    v_reg accum._registers := accum._get_register('register_partitions', p_name);
BEGIN
    RETURN QUERY
    SELECT c.relname::text, b.lo, b.hi, greatest(c.reltuples, 0)::bigint, pg_size_pretty(pg_total_relation_size(c.oid)),
           b.is_default
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    CROSS JOIN LATERAL accum._partition_bounds(c.oid) b
    WHERE i.inhparent = format('accum.%I', v_reg.name || '_movements')::regclass
    ORDER BY b.is_default, b.lo;
END $$;

-- Creates missing partitions (current period and the next p_periods, or up to now() +
-- p_ahead) and one for every period that has rows in the default partition, moving them.
-- Takes SHARE UPDATE EXCLUSIVE on the parent; a short lock_timeout makes it give way to
-- traffic (the caller retries at its next pass).
CREATE FUNCTION accum.register_create_partitions(p_name text, p_ahead interval DEFAULT NULL, p_periods integer DEFAULT 3)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, accum, pg_temp SET lock_timeout = '5s' AS $$
DECLARE
    v_reg accum._registers := accum._get_register('register_create_partitions', p_name);
    v_start date;
    v_until date;
    v_n integer := 0;
    v_day date;
BEGIN
    IF p_periods IS NULL OR p_periods < 0 THEN
        PERFORM accum._raise('22023', p_name, 'p_periods must not be negative');
    END IF;
    EXECUTE format('LOCK TABLE accum.%I IN SHARE UPDATE EXCLUSIVE MODE', v_reg.name || '_movements');
    v_start := accum._partition_start(v_reg.partition_by, (now() AT TIME ZONE v_reg.time_zone)::date);
    IF p_ahead IS NOT NULL THEN
        v_until := ((now() + p_ahead) AT TIME ZONE v_reg.time_zone)::date;
        WHILE v_start <= v_until LOOP
            v_n := v_n + accum._ensure_partition(v_reg, v_start);
            v_start := accum._partition_next(v_reg.partition_by, v_start);
        END LOOP;
    ELSE
        FOR i IN 0 .. p_periods LOOP
            v_n := v_n + accum._ensure_partition(v_reg, v_start);
            v_start := accum._partition_next(v_reg.partition_by, v_start);
        END LOOP;
    END IF;
    FOR v_day IN EXECUTE format('SELECT DISTINCT date_trunc(%L, period AT TIME ZONE %L)::date FROM accum.%I ORDER BY 1',
                                v_reg.partition_by, v_reg.time_zone, v_reg.name || '_movements_default') LOOP
        v_n := v_n + accum._ensure_partition(v_reg, v_day);
    END LOOP;
    RETURN v_n;
END $$;
