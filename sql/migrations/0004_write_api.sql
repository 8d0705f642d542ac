-- 0004_write_api: the write path (SPEC §7). Everything funnels into the movements table;
-- statement-level triggers with transition tables apply each statement's net change to the
-- derived tables (or append it to the delta buffer), so API calls and direct DML share one
-- mechanism. A call with N movements runs a fixed number of statements.
--
-- Generated code uses identifiers containing "$" for its own variables and parameters:
-- dimension and resource names cannot contain "$", so they never collide.

CREATE FUNCTION accum._is_data_error(p_state text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT left(p_state, 2) = '22'
        OR p_state IN ('23502', '23514', '42602', '42701', '42703', '42704', '42809', '42939', '42P07',
                       '0A000', '54000', '55000')
$$;

-- Recorder helpers: canonical text of a JSON recorder, typed value from canonical text.
CREATE FUNCTION accum._gen_rec_canon(p_reg accum._registers, p_j text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE p_reg.recorder_type
        WHEN 'text' THEN format('(%s #>> ''{}'')', p_j)
        WHEN 'bigint' THEN format('((%s #>> ''{}'')::numeric::bigint)::text', p_j)
        ELSE format('((%s #>> ''{}'')::uuid)::text', p_j)
    END
$$;

CREATE FUNCTION accum._gen_rec_typed(p_reg accum._registers, p_text text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE p_reg.recorder_type WHEN 'text' THEN p_text ELSE format('(%s)::%s', p_text, p_reg.recorder_type) END
$$;

CREATE FUNCTION accum._rec_type(p_reg accum._registers) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE p_reg.recorder_type WHEN 'bigint' THEN ARRAY['bigint', 'bigint', NULL, NULL]
                                    ELSE accum._parse_type(p_reg.recorder_type) END
$$;

-- Boolean SQL expression: the JSON value p_j is valid for parsed type p_t in its common
-- shapes (false can still be valid: exponents, trailing zeros, upper-case uuids ... go to the
-- full check). Kept small on purpose: the per-call cost of a statement grows with the size of
-- its expressions, and the full check (_gen_value_check) runs only when this says false.
CREATE FUNCTION accum._gen_fast_value(p_t text[], p_j text, p_role text) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    v_txt text := format('(%s #>> ''{}'')', p_j);
BEGIN
    RETURN CASE p_t[2]
        WHEN 'smallint' THEN format('%s ~ %L', v_txt, '^-?(0|[1-9][0-9]{0,3})$')
        WHEN 'integer' THEN format('%s ~ %L', v_txt, '^-?(0|[1-9][0-9]{0,8})$')
        WHEN 'bigint' THEN format('%s ~ %L', v_txt, '^-?(0|[1-9][0-9]{0,17})$')
        WHEN 'numeric' THEN format('%s ~ %L', v_txt, CASE WHEN p_t[3] IS NULL THEN '^-?(0|[1-9][0-9]{0,29})(\.[0-9]{1,30})?$'
            ELSE '^-?' || CASE WHEN p_t[3]::int - p_t[4]::int > 0
                              THEN format('(0|[1-9][0-9]{0,%s})', least(p_t[3]::int - p_t[4]::int, 255) - 1) ELSE '0' END
                       || CASE WHEN p_t[4]::int > 0 THEN format('(\.[0-9]{1,%s})?', least(p_t[4]::int, 255)) ELSE '' END || '$' END)
        WHEN 'text' THEN format('jsonb_typeof(%s) = ''string'' AND octet_length(%s) BETWEEN %s AND 1024', p_j, v_txt,
                                CASE WHEN p_role = 'recorder' THEN 1 ELSE 0 END)
        WHEN 'varchar' THEN format('jsonb_typeof(%s) = ''string'' AND octet_length(%s) <= 1024 AND char_length(%s) <= %s',
                                   p_j, v_txt, v_txt, p_t[3])
        WHEN 'uuid' THEN format('jsonb_typeof(%s) = ''string'' AND %s ~ %L', p_j, v_txt,
                                '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$')
        WHEN 'date' THEN format('jsonb_typeof(%s) = ''string'' AND %s ~ %L', p_j, v_txt,
                                '^[0-9]{3}[1-9]-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])$')
        WHEN 'boolean' THEN format('jsonb_typeof(%s) = ''boolean''', p_j)
    END;
END $$;

-- Boolean SQL expression: movement p_m is valid in its common shapes (see _gen_fast_value);
-- periods on days 29-31 or in years 0000, 0001 and 9999 take the full check.
CREATE FUNCTION accum._gen_movement_fast(p_reg accum._registers, p_m text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_names text[] := ARRAY['recorder', 'period'] || p_reg.dim_names || p_reg.res_names;
    v_parts text[] := '{}';
    v_bytes text := accum._gen_key_bytes(p_reg, '((' || p_m || ')->%1$s #>> ''{}'')');
    v_t text[];
BEGIN
    v_parts := v_parts || accum._gen_fast_value(accum._rec_type(p_reg), format('(%s)->''recorder''', p_m), 'recorder');
    v_parts := v_parts || format('jsonb_typeof((%1$s)->''period'') = ''string'' AND ((%1$s)->>''period'') ~ %2$L',
        p_m, '^([0-9]{3}[2-9]|[0-9]{2}[1-9][0-9]|[0-9][1-9][0-9]{2}|[1-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])'
             || '([T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?)?(Z|[+-](0[0-9]|1[0-5])(:[0-5][0-9])?)?$');
    FOR i IN 1 .. cardinality(p_reg.dim_names) LOOP
        v_t := accum._parse_type(p_reg.dim_types[i]);
        v_parts := v_parts || accum._gen_fast_value(v_t, format('(%s)->%L', p_m, p_reg.dim_names[i]), 'dimension');
    END LOOP;
    FOR i IN 1 .. cardinality(p_reg.res_names) LOOP
        v_parts := v_parts || accum._gen_fast_value(accum._parse_type(p_reg.res_types[i]),
                                                    format('(%s)->%L', p_m, p_reg.res_names[i]), 'resource');
    END LOOP;
    IF v_bytes IS NOT NULL THEN
        v_parts := v_parts || format('%s <= 2048', v_bytes);
    END IF;
    -- CASE, not AND: the key tests must not run on a non-object
    RETURN format('CASE WHEN jsonb_typeof(%1$s) = ''object'' AND (%1$s) - %2$L::text[] = ''{}''::jsonb AND (%1$s) ?& %2$L::text[] '
                  'THEN coalesce(%3$s, false) ELSE false END',
                  p_m, v_names, '(' || array_to_string(v_parts, ') AND (') || ')');
END $$;

-- Bucket (local start date) of an instant expression for a level, in the register zone.
CREATE FUNCTION accum._gen_bucket(p_reg accum._registers, p_level text, p_ts text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE p_level
        WHEN 'day' THEN format('(%s AT TIME ZONE %L)::date', p_ts, p_reg.time_zone)
        ELSE format('date_trunc(%L, %s AT TIME ZONE %L)::date', p_level, p_ts, p_reg.time_zone)
    END
$$;

-- SELECT list converting movement JSON p_m into (period, dims..., resources...).
CREATE FUNCTION accum._gen_movement_values(p_reg accum._registers, p_m text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT accum._gen_period_value(p_reg, format('(%s)->''period''', p_m))
        || (SELECT string_agg(', ' || accum._gen_conv(accum._parse_type(t), format('(%s)->%L', p_m, n)), '' ORDER BY i)
            FROM unnest(p_reg.dim_names || p_reg.res_names, p_reg.dim_types || p_reg.res_types) WITH ORDINALITY u(n, t, i))
$$;

-- Statements applying the signed rows of p_src (columns dim_hash, period, dims, resources)
-- to the derived tables, in the one lock order of SPEC §12: totals day, month, year, then
-- the cache, each by (dim_hash, dimensions, bucket). High-write registers append to the
-- delta buffer instead and lock no derived row.
--
-- p_merge: the source's period column holds the delta buffer's bucket (a local date of the
-- finest kept level) and the change always goes to the derived tables (a merge).
CREATE FUNCTION accum._gen_apply_changes(p_reg accum._registers, p_src text, p_merge boolean DEFAULT false) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    r text := p_reg.name;
    v_dims text := accum._list(p_reg.dim_names, 's.%1$I');
    v_dims_plain text := accum._list(p_reg.dim_names, '%1$I');
    v_res_plain text := accum._list(p_reg.res_names, '%1$I');
    v_sums text := accum._list(p_reg.res_names, 'sum(s.%1$I)');
    v_nonzero text := 'NOT (' || accum._list(p_reg.res_names, 'sum(s.%1$I) = 0', ' AND ') || ')';
    v_zero_t text := '(' || accum._list(p_reg.res_names, 't.%1$I = 0', ' AND ') || ')';
    v_zero_plain text := accum._list(p_reg.res_names, '%1$I = 0', ' AND ');
    v_set text := accum._list(p_reg.res_names, '%1$I = t.%1$I + EXCLUDED.%1$I');
    v_levels text[] := accum._levels(p_reg.totals_period);
    v_out text := '';
    v_level text;
    v_ndims integer := cardinality(p_reg.dim_names);
BEGIN
    IF p_reg.high_write AND NOT p_merge THEN
        RETURN format(
            'INSERT INTO accum.%I (dim_hash, %s, bucket, %s) SELECT s.dim_hash, %s, %s, %s FROM (%s) s '
            'GROUP BY s.dim_hash, %s, %s HAVING %s;',
            r || '_delta', v_dims_plain, v_res_plain, v_dims, accum._gen_bucket(p_reg, v_levels[1], 's.period'),
            v_sums, p_src, v_dims, accum._gen_bucket(p_reg, v_levels[1], 's.period'), v_nonzero);
    END IF;
    FOREACH v_level IN ARRAY v_levels LOOP
        v_out := v_out || format(
            'WITH up AS (INSERT INTO accum.%1$I AS t (dim_hash, period, %2$s, %3$s) '
            'SELECT s.dim_hash, %4$s, %5$s, %6$s FROM (%7$s) s GROUP BY s.dim_hash, %5$s, %4$s HAVING %8$s '
            'ORDER BY s.dim_hash, %5$s, %4$s '
            'ON CONFLICT (dim_hash, %2$s, period) DO UPDATE SET %9$s RETURNING t.dim_hash, %10$s AS z) '
            'SELECT array_agg(up.dim_hash) FILTER (WHERE up.z) INTO v$zero FROM up; '
            'IF v$zero IS NOT NULL THEN DELETE FROM accum.%1$I WHERE dim_hash = ANY (v$zero) AND %11$s; END IF; ',
            r || '_totals_' || v_level, v_dims_plain, v_res_plain,
            CASE WHEN p_merge THEN format('date_trunc(%L, s.period::timestamp)::date', v_level)
                 ELSE accum._gen_bucket(p_reg, v_level, 's.period') END,
            v_dims, v_sums, p_src, v_nonzero, v_set, v_zero_t, v_zero_plain);
    END LOOP;
    IF p_reg.kind = 'balance' THEN
        v_out := v_out || format(
            'WITH up AS (INSERT INTO accum.%1$I AS t (dim_hash, %2$s, %3$s) '
            'SELECT s.dim_hash, %4$s, %5$s FROM (%6$s) s GROUP BY s.dim_hash, %4$s HAVING %7$s '
            'ORDER BY s.dim_hash, %4$s '
            'ON CONFLICT (dim_hash, %2$s) DO UPDATE SET %8$s, last_movement_at = transaction_timestamp(), '
            'version = t.version + 1 RETURNING t.dim_hash, %9$s AS z) '
            'SELECT array_agg(up.dim_hash) FILTER (WHERE up.z) INTO v$zero FROM up; '
            'IF v$zero IS NOT NULL THEN DELETE FROM accum.%1$I WHERE dim_hash = ANY (v$zero) AND %10$s; END IF; ',
            r || '_balance_cache', v_dims_plain, v_res_plain, v_dims, v_sums, p_src, v_nonzero, v_set,
            v_zero_t, v_zero_plain);
    END IF;
    RETURN v_out;
END $$;

-- Statements that lock, in the lock order, every derived row the keys of p_keys (columns
-- dim_hash, period, dims) will touch, inserting all-zero placeholders for missing keys.
-- Used by calls that both remove and add movements, so their two trigger passes never take
-- a new lock after a later table's (SPEC §12). Placeholders left all-zero are removed by
-- _gen_prelock_cleanup.
CREATE FUNCTION accum._gen_prelock(p_reg accum._registers, p_keys text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    r text := p_reg.name;
    v_dims text := accum._list(p_reg.dim_names, 'k.%1$I');
    v_dims_plain text := accum._list(p_reg.dim_names, '%1$I');
    v_res_plain text := accum._list(p_reg.res_names, '%1$I');
    v_zeros text := accum._list(p_reg.res_names, '0');
    v_first text := quote_ident(p_reg.res_names[1]);
    v_out text := '';
    v_level text;
BEGIN
    IF p_reg.high_write THEN
        RETURN '';
    END IF;
    FOREACH v_level IN ARRAY accum._levels(p_reg.totals_period) LOOP
        v_out := v_out || format(
            'WITH ins AS (INSERT INTO accum.%1$I AS t (dim_hash, period, %2$s, %3$s) '
            'SELECT DISTINCT k.dim_hash, %4$s, %5$s, %6$s FROM (%7$s) k ORDER BY 1, %5$s, 2 '
            'ON CONFLICT (dim_hash, %2$s, period) DO UPDATE SET %8$s = EXCLUDED.%8$s WHERE false '
            'RETURNING t.dim_hash) SELECT array_agg(ins.dim_hash) INTO %9$s FROM ins; ',
            r || '_totals_' || v_level, v_dims_plain, v_res_plain, accum._gen_bucket(p_reg, v_level, 'k.period'),
            v_dims, v_zeros, p_keys, v_first, 'v$pl_' || v_level);
    END LOOP;
    IF p_reg.kind = 'balance' THEN
        v_out := v_out || format(
            'WITH ins AS (INSERT INTO accum.%1$I AS t (dim_hash, %2$s, %3$s) '
            'SELECT DISTINCT k.dim_hash, %4$s, %5$s FROM (%6$s) k ORDER BY 1, %4$s '
            'ON CONFLICT (dim_hash, %2$s) DO UPDATE SET %7$s = EXCLUDED.%7$s WHERE false '
            'RETURNING t.dim_hash) SELECT array_agg(ins.dim_hash) INTO v$pl_cache FROM ins; ',
            r || '_balance_cache', v_dims_plain, v_res_plain, v_dims, v_zeros, p_keys, v_first);
    END IF;
    RETURN v_out;
END $$;

CREATE FUNCTION accum._gen_prelock_cleanup(p_reg accum._registers) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_zero text := accum._list(p_reg.res_names, '%1$I = 0', ' AND ');
    v_out text := '';
    v_level text;
BEGIN
    IF p_reg.high_write THEN
        RETURN '';
    END IF;
    FOREACH v_level IN ARRAY accum._levels(p_reg.totals_period) LOOP
        v_out := v_out || format('IF v$pl_%1$s IS NOT NULL THEN DELETE FROM accum.%2$I WHERE dim_hash = ANY (v$pl_%1$s) AND %3$s; END IF; ',
                                 v_level, p_reg.name || '_totals_' || v_level, v_zero);
    END LOOP;
    IF p_reg.kind = 'balance' THEN
        v_out := v_out || format('IF v$pl_cache IS NOT NULL THEN DELETE FROM accum.%1$I WHERE dim_hash = ANY (v$pl_cache) AND %2$s; END IF; ',
                                 p_reg.name || '_balance_cache', v_zero);
    END IF;
    RETURN v_out;
END $$;

CREATE FUNCTION accum._prelock_declarations() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 'v$pl_day bigint[]; v$pl_month bigint[]; v$pl_year bigint[]; v$pl_cache bigint[]; '
$$;

-- Keys (dim_hash, period, dims) of movement JSON objects in p_from (an SQL FROM item that
-- yields a jsonb column m).
CREATE FUNCTION accum._gen_new_keys(p_reg accum._registers, p_from text, p_where text DEFAULT 'true') RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT format('SELECT %s AS dim_hash, x.period, %s FROM (SELECT %s AS period, %s FROM %s WHERE %s) x',
        accum._hash_expr(p_reg.dim_names, p_reg.dim_types, 'x.%1$I'),
        accum._list(p_reg.dim_names, 'x.%1$I'),
        accum._gen_period_value(p_reg, 'm->''period'''),
        (SELECT string_agg(format('%s AS %I', accum._gen_conv(accum._parse_type(t), format('m->%L', n)), n), ', ' ORDER BY i)
         FROM unnest(p_reg.dim_names, p_reg.dim_types) WITH ORDINALITY u(n, t, i)),
        p_from, p_where)
$$;

CREATE FUNCTION accum._gen_trigger_functions(p_reg accum._registers) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    r text := p_reg.name;
    v_cols text := 'dim_hash, period, ' || accum._list(p_reg.dim_names, '%1$I');
    v_pos text := accum._list(p_reg.res_names, '%1$I');
    -- negate as numeric: -(minimum integer) overflows the column's own type
    v_neg text := accum._list(p_reg.res_names, '-(%1$I::numeric) AS %1$I');
    v_src text;
    -- jit off: compiling these small, frequent statements costs far more than it saves
    v_head text := 'RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, accum, pg_temp SET jit = off AS %L';
    v_body text := E'#variable_conflict use_column\nDECLARE v$zero bigint[]; BEGIN %s RETURN NULL; END';
BEGIN
    v_src := format('SELECT %s, %s FROM new_rows', v_cols, v_pos);
    EXECUTE format('CREATE OR REPLACE FUNCTION accum.%I() ' || v_head, '_' || r || '_ins',
                   format(v_body, accum._gen_apply_changes(p_reg, v_src)));
    v_src := format('SELECT %s, %s FROM old_rows', v_cols, v_neg);
    EXECUTE format('CREATE OR REPLACE FUNCTION accum.%I() ' || v_head, '_' || r || '_del',
                   format(v_body, accum._gen_apply_changes(p_reg, v_src)));
    v_src := format('SELECT %s, %s FROM new_rows UNION ALL SELECT %s, %s FROM old_rows', v_cols, v_pos, v_cols, v_neg);
    EXECUTE format('CREATE OR REPLACE FUNCTION accum.%I() ' || v_head, '_' || r || '_upd',
                   format(v_body, accum._gen_apply_changes(p_reg, v_src)));
END $$;

CREATE FUNCTION accum._gen_write_functions(p_reg accum._registers) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    r text := p_reg.name;
    v_tbl text := format('accum.%I', r || '_movements');
    v_cols text := 'recorder, period, ' || accum._list(p_reg.dim_names || p_reg.res_names, '%1$I');
    -- jit off: the planner's estimates for JSON expansion are large, and compiling the
    -- generated expressions would cost seconds on wide registers for no gain
    v_head text := 'LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, accum, pg_temp SET jit = off AS %L';
    v_rec_t text[] := accum._rec_type(p_reg);
    v_rec_array text := CASE p_reg.recorder_type WHEN 'text' THEN 'text[]' ELSE p_reg.recorder_type || '[]' END;
    v_body text;
    v_cmd_check text;
    v_v_cte text;
BEGIN
    -- post: one pass takes the recorder locks (sorted) and runs the small fast check; only
    -- when a movement fails it does the full check run (to raise the first error, or to find
    -- the rest valid in unusual shapes). Then one INSERT: a second one would revisit the
    -- derived tables after the cache and break the lock order (SPEC §12).
    v_body := format($f$
#variable_conflict use_column
DECLARE v$err text[]; v$n integer; v$ok boolean;
BEGIN
    -- lock keys use the canonical recorder when it is valid (an invalid one fails below)
    SELECT bool_and(q.ok) INTO v$ok
    FROM (SELECT s.k, bool_and(s.ok) AS ok
          FROM (SELECT hashtext(CASE WHEN %9$s IS NULL THEN %4$s ELSE s.m->>'recorder' END) AS k, %10$s AS ok
                FROM jsonb_array_elements(p$data) s(m)) s
          GROUP BY s.k ORDER BY s.k) q
    CROSS JOIN LATERAL (SELECT pg_advisory_xact_lock(%3$s, q.k)) l;
    IF NOT v$ok THEN
        SELECT q.e INTO v$err FROM (SELECT s.n, %1$s AS e FROM jsonb_array_elements(p$data) WITH ORDINALITY s(m, n)) q
        WHERE q.e IS NOT NULL ORDER BY q.n LIMIT 1;
        IF v$err IS NOT NULL THEN PERFORM accum._raise_err(%2$L, v$err); END IF;
    END IF;
    INSERT INTO %5$s (%6$s) SELECT %7$s, %8$s FROM jsonb_array_elements(p$data) s(m);
    GET DIAGNOSTICS v$n = ROW_COUNT;
    RETURN v$n;
END$f$,
        accum._gen_movement_check(p_reg, 's.m', '''movements['' || (s.n - 1) || '']''', 'required'),
        r, p_reg.id, accum._gen_rec_canon(p_reg, 's.m->''recorder'''), v_tbl, v_cols,
        accum._gen_conv(v_rec_t, 's.m->''recorder'''), accum._gen_movement_values(p_reg, 's.m'),
        accum._gen_value_check(v_rec_t, 's.m->''recorder''', '''''', 'recorder'),
        accum._gen_movement_fast(p_reg, 's.m'));
    EXECUTE format('CREATE OR REPLACE FUNCTION accum.%I(p$data jsonb) RETURNS integer ' || v_head, '_' || r || '_post', v_body);

    -- unpost: lock the recorder, one DELETE.
    v_body := format($f$
#variable_conflict use_column
DECLARE v$err text[]; v$n integer; v$j jsonb := to_jsonb(p$recorder);
BEGIN
    v$err := %1$s;
    IF v$err IS NOT NULL THEN PERFORM accum._raise_err(%2$L, v$err); END IF;
    PERFORM pg_advisory_xact_lock(%3$s, hashtext(%4$s));
    DELETE FROM %5$s m WHERE m.recorder = %6$s;
    GET DIAGNOSTICS v$n = ROW_COUNT;
    RETURN v$n;
END$f$,
        accum._gen_value_check(v_rec_t, 'v$j', '''recorder''', 'recorder'), r, p_reg.id,
        accum._gen_rec_canon(p_reg, 'v$j'), v_tbl, accum._gen_conv(v_rec_t, 'v$j'));
    EXECUTE format('CREATE OR REPLACE FUNCTION accum.%I(p$recorder text) RETURNS integer ' || v_head, '_' || r || '_unpost', v_body);

    -- repost: validate, lock the recorder, pre-lock derived rows, DELETE, INSERT.
    v_body := format($f$
#variable_conflict use_column
DECLARE v$err text[]; v$n integer; v$j jsonb := to_jsonb(p$recorder); v$rec text; %1$s
BEGIN
    v$err := %2$s;
    IF v$err IS NOT NULL THEN PERFORM accum._raise_err(%3$L, v$err); END IF;
    v$rec := %4$s;
    -- the pre-lock below converts the new movements: they must be valid first
    SELECT q.e INTO v$err FROM (SELECT s.n, %5$s AS e FROM jsonb_array_elements(p$data) WITH ORDINALITY s(m, n)) q
    WHERE q.e IS NOT NULL ORDER BY q.n LIMIT 1;
    IF v$err IS NOT NULL THEN PERFORM accum._raise_err(%3$L, v$err); END IF;
    PERFORM pg_advisory_xact_lock(%6$s, hashtext(v$rec));
    %7$s
    DELETE FROM %8$s m WHERE m.recorder = %9$s;
    INSERT INTO %8$s (%10$s) SELECT %9$s, %11$s FROM jsonb_array_elements(p$data) WITH ORDINALITY s(m, n) ORDER BY s.n;
    GET DIAGNOSTICS v$n = ROW_COUNT;
    %12$s
    RETURN v$n;
END$f$,
        accum._prelock_declarations(),
        accum._gen_value_check(v_rec_t, 'v$j', '''recorder''', 'recorder'), r,
        accum._gen_rec_canon(p_reg, 'v$j'),
        accum._gen_movement_check(p_reg, 's.m', '''movements['' || (s.n - 1) || '']''', 'optional', 'v$rec'),
        p_reg.id,
        accum._gen_prelock(p_reg, format('SELECT m.dim_hash, m.period, %s FROM %s m WHERE m.recorder = %s UNION ALL %s',
            accum._list(p_reg.dim_names, 'm.%1$I'), v_tbl, accum._gen_rec_typed(p_reg, 'v$rec'),
            accum._gen_new_keys(p_reg, 'jsonb_array_elements(p$data) s(m)'))),
        v_tbl, accum._gen_rec_typed(p_reg, 'v$rec'), v_cols, accum._gen_movement_values(p_reg, 's.m'),
        accum._gen_prelock_cleanup(p_reg));
    EXECUTE format('CREATE OR REPLACE FUNCTION accum.%I(p$recorder text, p$data jsonb) RETURNS integer ' || v_head,
                   '_' || r || '_repost', v_body);

    -- apply: a batch of commands of this register (SPEC §7.1), p$cmds = [{"i": ord, "c": command}].
    -- Result equals one-by-one application: per recorder, only the movements posted after its
    -- last unpost/repost survive, and the recorder's stored movements go when it has one.
    v_cmd_check := format($f$CASE
        WHEN c.c - '{op,register,recorder,movements,id,sent_at}'::text[] <> '{}'::jsonb THEN
            ARRAY['42703', 'commands[' || c.i || '].' || (SELECT min(k) FROM jsonb_object_keys(c.c - '{op,register,recorder,movements,id,sent_at}'::text[]) k), 'unknown key', NULL]
        WHEN NOT c.c ? 'op' THEN ARRAY['22023', 'commands[' || c.i || ']', 'missing key "op"', NULL]
        WHEN jsonb_typeof(c.c->'op') = 'null' THEN ARRAY['22004', 'commands[' || c.i || '].op', 'null is not allowed', NULL]
        WHEN jsonb_typeof(c.c->'op') <> 'string' OR c.c->>'op' NOT IN ('post', 'unpost', 'repost') THEN
            ARRAY['22023', 'commands[' || c.i || '].op', 'op must be post, unpost or repost, got ' || accum._jshow(c.c->'op'), NULL]
        WHEN NOT c.c ? 'recorder' THEN ARRAY['22023', 'commands[' || c.i || ']', 'missing key "recorder"', NULL]
        WHEN jsonb_typeof(c.c->'recorder') = 'null' THEN ARRAY['22004', 'commands[' || c.i || '].recorder', 'null is not allowed', NULL]
        ELSE coalesce(%1$s, CASE
            WHEN c.c->>'op' = 'unpost' AND c.c ? 'movements' THEN
                ARRAY['22023', 'commands[' || c.i || '].movements', 'unpost takes no movements', NULL]
            WHEN c.c->>'op' <> 'unpost' AND NOT c.c ? 'movements' THEN
                ARRAY['22023', 'commands[' || c.i || ']', 'missing key "movements"', NULL]
            WHEN c.c->>'op' <> 'unpost' AND jsonb_typeof(c.c->'movements') = 'null' THEN
                ARRAY['22004', 'commands[' || c.i || '].movements', 'null is not allowed', NULL]
            WHEN c.c->>'op' <> 'unpost' AND jsonb_typeof(c.c->'movements') <> 'array' THEN
                ARRAY['22023', 'commands[' || c.i || '].movements', 'expected an array, got ' || jsonb_typeof(c.c->'movements'), NULL]
            WHEN c.c->>'op' <> 'unpost' AND jsonb_array_length(c.c->'movements') > 10000 THEN
                ARRAY['22023', 'commands[' || c.i || '].movements', jsonb_array_length(c.c->'movements') || ' movements; the limit is 10000 per command', NULL]
        END)
    END$f$,
        accum._gen_value_check(v_rec_t, 'c.c->''recorder''', '''commands['' || c.i || ''].recorder''', 'recorder'));
    -- valid commands with their group: g = deletes (unpost/repost) so far, gmax = deletes in all
    v_v_cte := format($f$c AS (SELECT (x->>'i')::int AS i, x->'c' AS c FROM jsonb_array_elements(p$cmds) x),
        v0 AS (SELECT c.i, c.c->>'op' AS op, %1$s AS rec,
                      CASE WHEN c.c->>'op' = 'unpost' THEN '[]'::jsonb ELSE c.c->'movements' END AS mv
               FROM c WHERE c.i <> ALL (v$bad)),
        v AS (SELECT v0.*, jsonb_array_length(v0.mv) AS n,
                     count(*) FILTER (WHERE v0.op <> 'post') OVER (PARTITION BY v0.rec ORDER BY v0.i) AS g,
                     count(*) FILTER (WHERE v0.op <> 'post') OVER (PARTITION BY v0.rec) AS gmax
              FROM v0)$f$,
        accum._gen_rec_canon(p_reg, 'c.c->''recorder'''));
    v_body := format($f$
#variable_conflict use_column
DECLARE v$errs jsonb; v$bad integer[]; v$del text[]; v$dbcnt jsonb; %1$s
BEGIN
    WITH c AS (SELECT (x->>'i')::int AS i, x->'c' AS c FROM jsonb_array_elements(p$cmds) x),
    ce AS (SELECT c.i, c.c, %2$s AS e FROM c),
    me AS (SELECT DISTINCT ON (q.i) q.i, q.e FROM (
              SELECT ce.i, s.n, %3$s AS e
              FROM ce CROSS JOIN LATERAL jsonb_array_elements(CASE WHEN ce.e IS NULL AND ce.c->>'op' <> 'unpost'
                                                                   THEN ce.c->'movements' ELSE '[]'::jsonb END)
                   WITH ORDINALITY s(m, n)) q
           WHERE q.e IS NOT NULL ORDER BY q.i, q.n)
    SELECT coalesce(jsonb_agg(jsonb_build_array(q.i, q.e) ORDER BY q.i), '[]'::jsonb) INTO v$errs
    FROM (SELECT ce.i, ce.e FROM ce WHERE ce.e IS NOT NULL UNION ALL SELECT me.i, me.e FROM me) q;
    IF jsonb_array_length(v$errs) > 0 AND NOT p$skip THEN
        PERFORM accum._raise_err(%4$L, ARRAY(SELECT jsonb_array_elements_text(v$errs->0->1)));
    END IF;
    SELECT coalesce(array_agg((e->>0)::int), '{}') INTO v$bad FROM jsonb_array_elements(v$errs) e;
    WITH %5$s
    SELECT array_agg(DISTINCT v.rec) FILTER (WHERE v.gmax > 0) INTO v$del FROM v;
    -- recorder locks, sorted (SPEC §12 step 1)
    PERFORM pg_advisory_xact_lock(%6$s, q.k) FROM (
        WITH %5$s SELECT DISTINCT hashtext(v.rec) AS k FROM v ORDER BY 1) q;
    IF v$del IS NOT NULL THEN
        %7$s
        WITH d AS (DELETE FROM %8$s m WHERE m.recorder = ANY (v$del::%9$s) RETURNING m.recorder)
        SELECT jsonb_object_agg(q.rec, q.cnt) INTO v$dbcnt FROM (SELECT d.recorder::text AS rec, count(*) AS cnt FROM d GROUP BY 1) q;
    END IF;
    WITH %5$s
    INSERT INTO %8$s (%10$s)
    SELECT %11$s, %12$s FROM v CROSS JOIN LATERAL jsonb_array_elements(v.mv) WITH ORDINALITY s(m, n)
    WHERE v.g = v.gmax AND v.op <> 'unpost' ORDER BY v.i, s.n;
    IF v$del IS NOT NULL THEN
        %13$s
    END IF;
    RETURN QUERY
    WITH %5$s,
    w1 AS (SELECT v.*, sum(CASE WHEN v.op <> 'unpost' THEN v.n ELSE 0 END) OVER (PARTITION BY v.rec ORDER BY v.i) AS cum FROM v),
    w2 AS (SELECT w1.i, w1.op, w1.n, w1.rec, w1.cum,
                  lag(w1.cum - CASE WHEN w1.op = 'repost' THEN w1.n ELSE 0 END) OVER (PARTITION BY w1.rec ORDER BY w1.i) AS prev
           FROM w1 WHERE w1.op <> 'post'),
    res AS (SELECT w1.i, CASE WHEN w1.op <> 'unpost' THEN w1.n
                              ELSE (w2.cum - coalesce(w2.prev, 0) + CASE WHEN w2.prev IS NULL THEN coalesce((v$dbcnt->>w1.rec)::int, 0) ELSE 0 END)::int
                         END AS affected
            FROM w1 LEFT JOIN w2 ON w2.i = w1.i)
    SELECT c.i, CASE WHEN e.e IS NULL THEN 'applied' ELSE 'rejected' END, res.affected,
           e.e->1->>0, CASE WHEN e.e IS NOT NULL THEN accum._err_message(%4$L, ARRAY(SELECT jsonb_array_elements_text(e.e->1))) END
    FROM c LEFT JOIN res ON res.i = c.i
    LEFT JOIN LATERAL (SELECT x AS e FROM jsonb_array_elements(v$errs) x WHERE (x->>0)::int = c.i) e ON true
    ORDER BY c.i;
END$f$,
        accum._prelock_declarations(),
        replace(v_cmd_check, 'c.c', 'c.c'),
        accum._gen_movement_check(p_reg, 's.m', '''commands['' || ce.i || ''].movements['' || (s.n - 1) || '']''', 'optional',
                                  accum._gen_rec_canon(p_reg, 'ce.c->''recorder''')),
        r, v_v_cte, p_reg.id,
        accum._gen_prelock(p_reg, format('SELECT m.dim_hash, m.period, %s FROM %s m WHERE m.recorder = ANY (v$del::%s) UNION ALL %s',
            accum._list(p_reg.dim_names, 'm.%1$I'), v_tbl, v_rec_array,
            accum._gen_new_keys(p_reg, format('(WITH %s SELECT s.m FROM v CROSS JOIN LATERAL jsonb_array_elements(v.mv) s(m) WHERE v.g = v.gmax AND v.op <> ''unpost'') nm', v_v_cte)))),
        v_tbl, v_rec_array, v_cols, accum._gen_rec_typed(p_reg, 'v.rec'), accum._gen_movement_values(p_reg, 's.m'),
        accum._gen_prelock_cleanup(p_reg));
    EXECUTE format('CREATE OR REPLACE FUNCTION accum.%I(p$cmds jsonb, p$skip boolean) '
                   'RETURNS TABLE ("o$ord" integer, "o$outcome" text, "o$affected" integer, "o$sqlstate" text, "o$message" text) '
                   || v_head, '_' || r || '_apply', v_body);
END $$;

-- ---------------------------------------------------------------------------
-- Public write API: checks the call's shape, then dispatches to the register's generated
-- function (the only dynamic SQL on the write path).
-- ---------------------------------------------------------------------------

-- Movement data as an array: one object becomes an array of one.
CREATE FUNCTION accum._data_array(p_register text, p_data jsonb, p_param text) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_data IS NULL THEN
        PERFORM accum._raise('22004', p_register, p_param || ' must not be null');
    END IF;
    CASE jsonb_typeof(p_data)
        WHEN 'array' THEN RETURN p_data;
        WHEN 'object' THEN RETURN jsonb_build_array(p_data);
        ELSE PERFORM accum._raise('22023', p_register, format('%s must be a movement object or an array of them, got %s',
                                                               p_param, jsonb_typeof(p_data)));
    END CASE;
    RETURN NULL;
END $$;

-- The hot path of single posts: a registry probe and one dynamic call, nothing more.
CREATE FUNCTION accum.register_post(p_register text, p_data jsonb) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, accum, pg_temp SET jit = off AS $$
DECLARE
    v_n integer;
BEGIN
    PERFORM FROM accum._registers g WHERE g.name = p_register;
    IF NOT FOUND THEN
        PERFORM accum._get_register('register_post', p_register);  -- raises 22004 or 42704
    END IF;
    IF jsonb_typeof(p_data) = 'object' THEN
        p_data := jsonb_build_array(p_data);
    ELSIF jsonb_typeof(p_data) IS DISTINCT FROM 'array' THEN
        p_data := accum._data_array(p_register, p_data, 'p_data');  -- raises 22004 or 22023
    ELSIF jsonb_array_length(p_data) = 0 THEN
        RETURN 0;
    END IF;
    EXECUTE 'SELECT accum.' || quote_ident('_' || p_register || '_post') || '($1)' INTO v_n USING p_data;
    RETURN v_n;
END $$;

CREATE FUNCTION accum.register_unpost(p_register text, p_recorder text) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, accum, pg_temp SET jit = off AS $$
DECLARE
    v_reg accum._registers := accum._get_register('register_unpost', p_register);
    v_n integer;
BEGIN
    IF p_recorder IS NULL THEN
        PERFORM accum._raise('22004', p_register, 'recorder: null is not allowed');
    END IF;
    EXECUTE format('SELECT accum.%I($1)', '_' || v_reg.name || '_unpost') INTO v_n USING p_recorder;
    RETURN v_n;
END $$;

CREATE FUNCTION accum.register_repost(p_register text, p_recorder text, p_data jsonb) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, accum, pg_temp SET jit = off AS $$
DECLARE
    v_reg accum._registers := accum._get_register('register_repost', p_register);
    v_data jsonb := accum._data_array(p_register, p_data, 'p_data');
    v_n integer;
BEGIN
    IF p_recorder IS NULL THEN
        PERFORM accum._raise('22004', p_register, 'recorder: null is not allowed');
    END IF;
    EXECUTE format('SELECT accum.%I($1, $2)', '_' || v_reg.name || '_repost') INTO v_n USING p_recorder, v_data;
    RETURN v_n;
END $$;

CREATE FUNCTION accum.register_apply(p_commands jsonb, p_on_error text DEFAULT 'abort')
RETURNS TABLE (ord integer, outcome text, affected integer, sqlstate text, message text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, accum, pg_temp SET jit = off AS $$
#variable_conflict use_column
DECLARE
    v_skip boolean;
    v_rows jsonb := '[]'::jsonb;     -- [[ord, outcome, affected, sqlstate, message]]
    v_reg record;
    v_sub jsonb;
    v_one record;
    v_state text;
    v_msg text;
    v_first jsonb;
BEGIN
    IF p_commands IS NULL OR p_on_error IS NULL THEN
        PERFORM accum._raise('22004', NULL, 'p_commands and p_on_error must not be null');
    END IF;
    IF p_on_error NOT IN ('abort', 'skip') THEN
        PERFORM accum._raise('22023', NULL, format('p_on_error must be abort or skip, got %s', to_jsonb(p_on_error)::text));
    END IF;
    IF jsonb_typeof(p_commands) <> 'array' THEN
        PERFORM accum._raise('22023', NULL, format('p_commands must be an array of commands, got %s', jsonb_typeof(p_commands)));
    END IF;
    v_skip := p_on_error = 'skip';
    -- Commands whose register cannot be resolved are rejected here; the rest go to their
    -- register's generated apply function, registers in name order (SPEC §12).
    SELECT coalesce(jsonb_agg(jsonb_build_array(q.i, 'rejected', NULL, q.err[1], accum._err_message(q.rname, q.err))), '[]')
    INTO v_rows
    FROM (
        SELECT x.i - 1 AS i, CASE WHEN jsonb_typeof(x.c) = 'object' AND jsonb_typeof(x.c->'register') = 'string'
                                  THEN x.c->>'register' END AS rname,
               CASE
                   WHEN jsonb_typeof(x.c) <> 'object' THEN
                       ARRAY['22023', format('commands[%s]', x.i - 1), 'expected an object, got ' || jsonb_typeof(x.c), NULL]
                   WHEN NOT x.c ? 'register' THEN ARRAY['22023', format('commands[%s]', x.i - 1), 'missing key "register"', NULL]
                   WHEN jsonb_typeof(x.c->'register') = 'null' THEN
                       ARRAY['22004', format('commands[%s].register', x.i - 1), 'null is not allowed', NULL]
                   WHEN jsonb_typeof(x.c->'register') <> 'string' THEN
                       ARRAY['22023', format('commands[%s].register', x.i - 1), 'expected a string, got ' || jsonb_typeof(x.c->'register'), NULL]
                   WHEN NOT EXISTS (SELECT 1 FROM accum._registers g WHERE g.name = x.c->>'register') THEN
                       ARRAY['42704', format('commands[%s].register', x.i - 1),
                             format('register "%s" does not exist', accum._clip(x.c->>'register', 64)), NULL]
               END AS err
        FROM jsonb_array_elements(p_commands) WITH ORDINALITY x(c, i)
    ) q WHERE q.err IS NOT NULL;

    FOR v_reg IN
        SELECT g.name, jsonb_agg(jsonb_build_object('i', x.i - 1, 'c', x.c) ORDER BY x.i) AS cmds
        FROM jsonb_array_elements(p_commands) WITH ORDINALITY x(c, i)
        JOIN accum._registers g ON jsonb_typeof(x.c) = 'object' AND g.name = x.c->>'register'
        GROUP BY g.name ORDER BY g.name COLLATE "C"
    LOOP
        BEGIN
            EXECUTE format('SELECT coalesce(jsonb_agg(jsonb_build_array(a."o$ord", a."o$outcome", a."o$affected", '
                           'a."o$sqlstate", a."o$message")), ''[]'') FROM accum.%I($1, true) a', '_' || v_reg.name || '_apply')
            INTO v_sub USING v_reg.cmds;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE;
            IF NOT accum._is_data_error(v_state) OR NOT v_skip THEN
                RAISE;
            END IF;
            -- The set-based pass hit a data error its checks did not foresee: apply this
            -- register's commands one by one, each in its own subtransaction.
            v_sub := '[]';
            FOR v_one IN SELECT e AS cmd FROM jsonb_array_elements(v_reg.cmds) e ORDER BY (e->>'i')::int LOOP
                BEGIN
                    EXECUTE format('SELECT jsonb_build_array(a."o$ord", a."o$outcome", a."o$affected", a."o$sqlstate", '
                                   'a."o$message") FROM accum.%I($1, true) a', '_' || v_reg.name || '_apply')
                    INTO v_first USING jsonb_build_array(v_one.cmd);
                    v_sub := v_sub || jsonb_build_array(v_first);
                EXCEPTION WHEN OTHERS THEN
                    GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT;
                    IF NOT accum._is_data_error(v_state) THEN
                        RAISE;
                    END IF;
                    v_sub := v_sub || jsonb_build_array(jsonb_build_array((v_one.cmd->>'i')::int, 'rejected', NULL, v_state, v_msg));
                END;
            END LOOP;
        END;
        v_rows := v_rows || v_sub;
    END LOOP;

    IF NOT v_skip THEN
        SELECT e INTO v_first FROM jsonb_array_elements(v_rows) e WHERE e->>1 = 'rejected' ORDER BY (e->>0)::int LIMIT 1;
        IF v_first IS NOT NULL THEN
            -- raising undoes what the other registers' passes applied: the batch is atomic
            RAISE EXCEPTION USING ERRCODE = v_first->>3, MESSAGE = v_first->>4;
        END IF;
    END IF;
    RETURN QUERY SELECT (e->>0)::int, e->>1, (e->>2)::int, e->>3, e->>4
                 FROM jsonb_array_elements(v_rows) e ORDER BY (e->>0)::int;
END $$;
