-- 0005_read_api: generated read functions <r>_balance, <r>_turnover, <r>_movements (SPEC §8).
-- Each read is one statement (one snapshot) and writes nothing. Whole years, months and days
-- come from totals plus pending deltas, at most two partial stretches from movements, so the
-- cost does not grow with history.

-- Declarations and checks of a dimensions filter held in v$f: sets "f$<dim>" for each
-- given key and v$hash when every dimension is given.
CREATE FUNCTION accum._gen_filter(p_reg accum._registers) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_decl text := 'v$hash bigint; v$err text[]; ';
    v_checks text[] := '{}';
    v_assign text := '';
    v_t text[];
    v_n text;
BEGIN
    FOR i IN 1 .. cardinality(p_reg.dim_names) LOOP
        v_n := p_reg.dim_names[i];
        v_t := accum._parse_type(p_reg.dim_types[i]);
        v_decl := v_decl || format('%I %s; ', 'f$' || v_n, v_t[1]);
        v_checks := v_checks || format(
            'CASE WHEN NOT v$f ? %1$L THEN NULL WHEN jsonb_typeof(v$f->%1$L) = ''null'' '
            'THEN ARRAY[''22004'', %2$L, ''null is not allowed'', NULL] ELSE %3$s END',
            v_n, 'dimensions.' || v_n,
            accum._gen_value_check(v_t, format('v$f->%L', v_n), quote_literal('dimensions.' || v_n), 'filter'));
        v_assign := v_assign || format('IF v$f ? %1$L THEN %2$I := %3$s; END IF; ', v_n, 'f$' || v_n,
                                       accum._gen_conv(v_t, format('v$f->%L', v_n)));
    END LOOP;
    RETURN ARRAY[v_decl, format($f$
    IF v$f IS NOT NULL THEN
        IF jsonb_typeof(v$f) <> 'object' THEN
            PERFORM accum._raise('22023', %1$L, 'dimensions: expected an object, got ' || jsonb_typeof(v$f));
        END IF;
        IF v$f - %2$L::text[] <> '{}'::jsonb THEN
            PERFORM accum._raise('42703', %1$L, 'dimensions.' || (SELECT min(k) FROM jsonb_object_keys(v$f - %2$L::text[]) k)
                                              || ': unknown dimension');
        END IF;
        v$err := coalesce(%3$s);
        IF v$err IS NOT NULL THEN PERFORM accum._raise_err(%1$L, v$err); END IF;
        %4$s
        IF v$f ?& %2$L::text[] THEN v$hash := %5$s; END IF;
    END IF;
$f$, p_reg.name, p_reg.dim_names, array_to_string(v_checks, ', '), v_assign,
        accum._hash_expr(p_reg.dim_names, p_reg.dim_types, '"f$%1$s"'))];
END $$;

-- Filter condition on a table alias using the "f$" variables of _gen_filter.
CREATE FUNCTION accum._gen_filter_cond(p_reg accum._registers, p_alias text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT format('(v$hash IS NULL OR %1$sdim_hash = v$hash)', p_alias)
        || accum._list(p_reg.dim_names, format(' AND ("f$%%1$s" IS NULL OR %s%%1$I = "f$%%1$s")', p_alias), '')
$$;

-- The union of every source of an instant range: whole years, months and days from totals
-- (plus pending deltas), the partial stretches from movements. Each range is a branch of its
-- own, so it is an index condition. p_sp references the accum._range_split (a variable, or
-- ($1) in dynamic SQL), p_select is each branch's select list, p_cond the filter, both on
-- unqualified columns.
CREATE FUNCTION accum._gen_range_union(p_reg accum._registers, p_select text, p_cond text, p_sp text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    r text := p_reg.name;
    v_levels text[] := accum._levels(p_reg.totals_period);
    v_parts text[] := '{}';
    v_ranges text[];
BEGIN
    v_parts := v_parts || ('SELECT ' || p_select || format(' FROM accum.%I WHERE period >= %2$s.ys AND period < %2$s.ye AND ',
                                                           r || '_totals_year', p_sp) || p_cond);
    IF 'month' = ANY (v_levels) THEN
        FOREACH v_ranges SLICE 1 IN ARRAY ARRAY[['ms', 'ys'], ['ye', 'me']] LOOP
            v_parts := v_parts || ('SELECT ' || p_select || format(' FROM accum.%I WHERE period >= %2$s.%3$s AND period < %2$s.%4$s AND ',
                                                                   r || '_totals_month', p_sp, v_ranges[1], v_ranges[2]) || p_cond);
        END LOOP;
    END IF;
    IF 'day' = ANY (v_levels) THEN
        FOREACH v_ranges SLICE 1 IN ARRAY ARRAY[['s', 'ms'], ['me', 'e']] LOOP
            v_parts := v_parts || ('SELECT ' || p_select || format(' FROM accum.%I WHERE period >= %2$s.%3$s AND period < %2$s.%4$s AND ',
                                                                   r || '_totals_day', p_sp, v_ranges[1], v_ranges[2]) || p_cond);
        END LOOP;
    END IF;
    IF p_reg.high_write THEN
        v_parts := v_parts || ('SELECT ' || p_select || format(' FROM accum.%I WHERE bucket >= %2$s.s AND bucket < %2$s.e AND ',
                                                               r || '_delta', p_sp) || p_cond);
    END IF;
    v_parts := v_parts
        || ('SELECT ' || p_select || format(' FROM accum.%I WHERE period >= %2$s.raw1_from AND period < %2$s.raw1_to '
                                            'AND period <= %2$s.raw2_to AND ', r || '_movements', p_sp) || p_cond)
        || ('SELECT ' || p_select || format(' FROM accum.%I WHERE period >= %2$s.raw2_from AND period <= %2$s.raw2_to AND ',
                                            r || '_movements', p_sp) || p_cond);
    RETURN array_to_string(v_parts, ' UNION ALL ');
END $$;

CREATE FUNCTION accum._gen_read_functions(p_reg accum._registers) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    r text := p_reg.name;
    v_filter text[] := accum._gen_filter(p_reg);
    v_res_obj text := accum._gen_res_object(p_reg.res_names, p_reg.res_types, 'sum(x.%I)');
    v_zero_obj text := accum._gen_res_object(p_reg.res_names, p_reg.res_types, 'NULL::numeric');
    v_res_cols text := accum._list(p_reg.res_names, '%1$I');
    v_res_cols_c text := accum._list(p_reg.res_names, 'c.%1$I');
    v_full_cond text := 'c.dim_hash = v$hash' || accum._list(p_reg.dim_names, ' AND c.%1$I = "f$%1$s"', '');
    -- dynamic template: select list %1$s, split in $1, hash in $2, dimension k in $(k+2)
    v_union text := accum._gen_range_union(p_reg, '%1$s', '($2 IS NULL OR dim_hash = $2)'
        || (SELECT coalesce(string_agg(format(' AND ($%s IS NULL OR %I = $%s)', i + 2, n, i + 2), '' ORDER BY i), '')
            FROM unnest(p_reg.dim_names) WITH ORDINALITY u(n, i)), '($1)');
    -- static, for a full key: PL/pgSQL keeps its plan
    v_union_full text := accum._gen_range_union(p_reg, accum._list(p_reg.res_names, '%1$I'),
        'dim_hash = v$hash' || accum._list(p_reg.dim_names, ' AND %1$I = "f$%1$s"', ''), 'v$sp');
    v_params text := 'v$sp, v$hash' || accum._list(p_reg.dim_names, ', "f$%1$s"', '');
    v_level text := (accum._levels(p_reg.totals_period))[1];
    v_rec_t text[] := accum._rec_type(p_reg);
    v_body text;
    v_delta_full text := '';
    v_delta_any text := '';
BEGIN
    IF p_reg.kind = 'balance' THEN
        IF p_reg.high_write THEN
            v_delta_full := format(' UNION ALL SELECT %s FROM accum.%I c WHERE %s', v_res_cols_c, r || '_delta', v_full_cond);
            v_delta_any := format(' UNION ALL SELECT %s FROM accum.%I c WHERE %s', v_res_cols_c, r || '_delta',
                                  accum._gen_filter_cond(p_reg, 'c.'));
        END IF;
        v_body := format($f$
#variable_conflict use_column
DECLARE v$f jsonb := %1$I.dimensions; v$at timestamptz := %1$I.at_date; v$sp accum._range_split; v$out jsonb; %2$s
BEGIN
    %3$s
    IF v$at IS NULL OR v$at = 'infinity' THEN
        IF v$hash IS NOT NULL THEN
            SELECT %4$s INTO v$out FROM (SELECT %5$s FROM accum.%6$I c WHERE %7$s%8$s) x;
        ELSE
            SELECT %4$s INTO v$out FROM (SELECT %5$s FROM accum.%6$I c WHERE %9$s%10$s) x;
        END IF;
        RETURN v$out;
    END IF;
    v$sp := accum._split_range(NULL, v$at, %11$L, %12$L);
    IF v$hash IS NOT NULL THEN
        SELECT %4$s INTO v$out FROM (%16$s) x;
    ELSE
        EXECUTE format(%13$L, %14$L) INTO v$out USING %15$s;
    END IF;
    RETURN v$out;
END$f$,
            r || '_balance', v_filter[1], v_filter[2], v_res_obj, v_res_cols_c, r || '_balance_cache',
            v_full_cond, v_delta_full, accum._gen_filter_cond(p_reg, 'c.'), v_delta_any,
            p_reg.time_zone, v_level,
            'SELECT ' || replace(v_res_obj, '%', '%%') || ' FROM (' || v_union || ') x',
            v_res_cols, v_params, v_union_full);
        EXECUTE format('CREATE OR REPLACE FUNCTION accum.%I(dimensions jsonb DEFAULT NULL, at_date timestamptz DEFAULT NULL) '
                       'RETURNS jsonb LANGUAGE plpgsql STABLE SET jit = off AS %L', r || '_balance', v_body);
    ELSE
        EXECUTE format('CREATE OR REPLACE FUNCTION accum.%I(dimensions jsonb DEFAULT NULL, at_date timestamptz DEFAULT NULL) '
                       'RETURNS jsonb LANGUAGE plpgsql STABLE SET jit = off AS %L', r || '_balance',
                       format('BEGIN PERFORM accum._raise(''42809'', %L, ''balance is not available for a turnover register; use %s_turnover''); RETURN NULL; END',
                              r, r));
    END IF;

    -- turnover: one row without group_by, a row per non-zero group with it
    v_body := format($f$
#variable_conflict use_column
DECLARE v$f jsonb := %1$I.dimensions; v$g jsonb := %1$I.group_by; v$sp accum._range_split; v$cols text; v$names text[]; %2$s
BEGIN
    %3$s
    IF v$g IS NOT NULL AND jsonb_typeof(v$g) <> 'array' THEN
        PERFORM accum._raise('22023', %4$L, 'group_by: expected an array of dimension names, got ' || jsonb_typeof(v$g));
    END IF;
    IF v$g IS NOT NULL THEN
        SELECT array_agg(e #>> '{}' ORDER BY n) INTO v$names FROM jsonb_array_elements(v$g) WITH ORDINALITY a(e, n);
        IF EXISTS (SELECT 1 FROM jsonb_array_elements(v$g) e WHERE jsonb_typeof(e) <> 'string') THEN
            PERFORM accum._raise('22023', %4$L, 'group_by: expected an array of dimension names (strings)');
        END IF;
        IF EXISTS (SELECT 1 FROM unnest(v$names) k WHERE NOT k = ANY (%5$L::text[])) THEN
            PERFORM accum._raise('42703', %4$L, format('group_by: unknown dimension %%s',
                to_jsonb((SELECT k FROM unnest(v$names) WITH ORDINALITY u(k, n) WHERE NOT k = ANY (%5$L::text[]) ORDER BY n LIMIT 1))::text));
        END IF;
        IF (SELECT count(DISTINCT k) FROM unnest(v$names) k) <> cardinality(v$names) THEN
            PERFORM accum._raise('22023', %4$L, 'group_by: duplicate dimension names');
        END IF;
    END IF;
    v$sp := accum._split_range(%1$I.from_date, %1$I.to_date, %6$L, %7$L);
    IF coalesce(cardinality(v$names), 0) = 0 AND v$hash IS NOT NULL THEN
        RETURN QUERY SELECT %13$s FROM (%14$s) x;
        RETURN;
    END IF;
    IF coalesce(cardinality(v$names), 0) = 0 THEN
        RETURN QUERY EXECUTE format(%8$L, %9$L) USING %10$s;
        RETURN;
    END IF;
    -- groups come out ordered by the group_by columns, in the order the caller gave them
    SELECT string_agg(format('%%I', k), ', ' ORDER BY n) INTO v$cols FROM unnest(v$names) WITH ORDINALITY u(k, n);
    RETURN QUERY EXECUTE format(%11$L, v$cols || ', ' || %9$L,
        (SELECT string_agg(format('%%L, ', k) || replace(d, '@', quote_ident(k)), ', ')
         FROM unnest(v$names) k JOIN unnest(%5$L::text[], %12$L::text[]) u(dn, d) ON dn = k),
        v$cols) USING %10$s;
END$f$,
        r || '_turnover', v_filter[1], v_filter[2], r, p_reg.dim_names, p_reg.time_zone, v_level,
        'SELECT ' || replace(v_res_obj, '%', '%%') || ' FROM (' || v_union || ') x',
        v_res_cols, v_params,
        'SELECT jsonb_build_object(%2$s) || ' || replace(v_res_obj, '%', '%%') || ' FROM ('
            || v_union || ') x GROUP BY %3$s HAVING NOT ('
            || replace(accum._list(p_reg.res_names, 'coalesce(sum(x.%1$I), 0) = 0', ' AND '), '%', '%%') || ') ORDER BY %3$s',
        (SELECT array_agg(accum._gen_dim_json(accum._parse_type(t), 'x.@') ORDER BY i)
         FROM unnest(p_reg.dim_types) WITH ORDINALITY u(t, i)),
        v_res_obj, v_union_full);
    EXECUTE format('CREATE OR REPLACE FUNCTION accum.%I(from_date timestamptz DEFAULT NULL, to_date timestamptz DEFAULT NULL, '
                   'dimensions jsonb DEFAULT NULL, group_by jsonb DEFAULT NULL) RETURNS SETOF jsonb LANGUAGE plpgsql STABLE SET jit = off AS %L',
                   r || '_turnover', v_body);

    -- movements: filtered, ordered by period and id
    v_body := format($f$
#variable_conflict use_column
DECLARE v$f jsonb := %1$I.dimensions; v$rec %2$s; v$j jsonb; %3$s
BEGIN
    %4$s
    IF %1$I.p_recorder IS NOT NULL THEN
        v$j := to_jsonb(%1$I.p_recorder);
        v$err := %5$s;
        IF v$err IS NOT NULL THEN PERFORM accum._raise_err(%6$L, v$err); END IF;
        v$rec := %7$s;
    END IF;
    RETURN QUERY
    SELECT jsonb_build_object('id', m.id, 'recorded_at', accum._ts_text(m.recorded_at, %8$L), 'recorder', %9$s,
                              'period', accum._ts_text(m.period, %8$L), 'dim_hash', m.dim_hash)
           || %10$s || %11$s
    FROM accum.%12$I m
    WHERE (v$rec IS NULL OR m.recorder = v$rec)
      AND (%1$I.from_date IS NULL OR m.period >= %1$I.from_date)
      AND (%1$I.to_date IS NULL OR m.period <= %1$I.to_date)
      AND %13$s
    ORDER BY m.period, m.id;
END$f$,
        r || '_movements', CASE p_reg.recorder_type WHEN 'text' THEN 'text' ELSE p_reg.recorder_type END,
        v_filter[1], v_filter[2],
        accum._gen_value_check(v_rec_t, 'v$j', '''p_recorder''', 'recorder'), r, accum._gen_conv(v_rec_t, 'v$j'),
        p_reg.time_zone,
        CASE p_reg.recorder_type WHEN 'uuid' THEN 'to_jsonb(m.recorder::text)' ELSE 'to_jsonb(m.recorder)' END,
        accum._gen_dim_object(p_reg.dim_names, p_reg.dim_types, 'm.%I'),
        accum._gen_res_object(p_reg.res_names, p_reg.res_types, 'm.%I'),
        r || '_movements', accum._gen_filter_cond(p_reg, 'm.'));
    EXECUTE format('CREATE OR REPLACE FUNCTION accum.%I(p_recorder text DEFAULT NULL, from_date timestamptz DEFAULT NULL, '
                   'to_date timestamptz DEFAULT NULL, dimensions jsonb DEFAULT NULL) RETURNS SETOF jsonb LANGUAGE plpgsql STABLE SET jit = off AS %L',
                   r || '_movements', v_body);
END $$;
