-- 0002_generators: building blocks that turn a register definition into SQL text.
-- Per-register functions are generated once (register_create / register_alter) with static
-- SQL, so PL/pgSQL caches their plans; these helpers only run at generation time.

-- format() each name into p_fmt (%1$I = quoted name, %2$s = 1-based position) and join.
CREATE FUNCTION accum._list(p_names text[], p_fmt text, p_sep text DEFAULT ', ') RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(string_agg(format(p_fmt, n, i), p_sep ORDER BY i), '')
    FROM unnest(p_names) WITH ORDINALITY AS u(n, i)
$$;

-- dim_hash (SPEC §4.6): PostgreSQL's per-type extended hash functions (those of hash
-- partitioning) chained through their seed. Immutable, blind to every session setting
-- and to numeric display scale. p_ref formats a column reference from a name (%1$I).
CREATE FUNCTION accum._hash_expr(p_names text[], p_types text[], p_ref text) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    v_expr text := '0::bigint';
    v_col text;
    v_base text;
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_names, 1), 0) LOOP
        v_col := format(p_ref, p_names[i]);
        v_base := (accum._parse_type(p_types[i]))[2];
        v_expr := CASE v_base
            WHEN 'smallint' THEN format('hashint2extended(%s, %s)', v_col, v_expr)
            WHEN 'integer' THEN format('hashint4extended(%s, %s)', v_col, v_expr)
            WHEN 'bigint' THEN format('hashint8extended(%s, %s)', v_col, v_expr)
            WHEN 'numeric' THEN format('hash_numeric_extended(%s, %s)', v_col, v_expr)
            WHEN 'text' THEN format('hashtextextended(%s, %s)', v_col, v_expr)
            WHEN 'varchar' THEN format('hashtextextended((%s)::text, %s)', v_col, v_expr)
            WHEN 'uuid' THEN format('uuid_hash_extended(%s, %s)', v_col, v_expr)
            -- date is an int4 day count from 2000-01-01 internally, hashed as such
            WHEN 'date' THEN format('hashint4extended((%s) - DATE ''2000-01-01'', %s)', v_col, v_expr)
            WHEN 'boolean' THEN format('hashint4extended((%s)::integer, %s)', v_col, v_expr)
        END;
    END LOOP;
    RETURN v_expr;
END $$;

-- Inline SQL expression: y, m, d (integer SQL expressions) form a date of years 0001-9999.
-- Inline rather than a function call: this runs once per movement.
CREATE FUNCTION accum._gen_valid_ymd(p_y text, p_m text, p_d text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT format('(%1$s BETWEEN 1 AND 9999 AND %2$s BETWEEN 1 AND 12 AND %3$s >= 1 '
                  'AND %3$s <= (''{31,29,31,30,31,30,31,31,30,31,30,31}''::int[])[%2$s] '
                  'AND (%2$s <> 2 OR %3$s <= 28 OR (%1$s %% 4 = 0 AND (%1$s %% 100 <> 0 OR %1$s %% 400 = 0))))',
                  p_y, p_m, p_d)
$$;

-- Builds the error record {sqlstate, location, problem, detail} of a failed check. Generated
-- checks call it only in their failing branch: keeping the message text out of the generated
-- expressions keeps them small, and their per-call set-up cheap.
CREATE FUNCTION accum._verr(p_state text, p_loc text, p_code text, p_value jsonb DEFAULT NULL, p_arg text DEFAULT NULL)
RETURNS text[] LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    v_show text := accum._jshow(p_value);
    v_txt text := p_value #>> '{}';
    v_got text := jsonb_typeof(p_value) || ' ' || accum._jshow(p_value);
    v_loc text := p_loc;
    v_problem text;
    v_key text;
BEGIN
    CASE p_code
        WHEN 'null' THEN v_problem := 'null is not allowed';
        WHEN 'num_type' THEN v_problem := 'expected a number or a decimal string, got ' || v_got;
        WHEN 'nan' THEN v_problem := v_show || ' is not allowed: NaN and Infinity are not numbers';
        WHEN 'decimal' THEN v_problem := v_show || ' is not a decimal number';
        WHEN 'integer' THEN v_problem := v_show || ' is not an integer';
        WHEN 'range' THEN v_problem := v_show || ' is out of range for ' || p_arg;
        WHEN 'scale' THEN
            v_problem := format('%s has %s decimal places; the %s scale is %s', v_show, scale(trim_scale(v_txt::numeric)),
                                split_part(p_arg, ':', 1), split_part(p_arg, ':', 2));
        WHEN 'digits' THEN v_problem := v_show || ' has too many integer digits for ' || p_arg;
        WHEN 'str_type' THEN v_problem := 'expected a string, got ' || v_got;
        WHEN 'empty' THEN v_problem := 'must not be empty';
        WHEN 'bytes' THEN v_problem := format('value is %s bytes; the limit is 1024', octet_length(v_txt));
        WHEN 'chars' THEN v_problem := format('value is %s characters; the limit is %s', char_length(v_txt), p_arg);
        WHEN 'uuid_type' THEN v_problem := 'expected a uuid string, got ' || v_got;
        WHEN 'uuid' THEN v_problem := v_show || ' is not a uuid (8-4-4-4-12 hex digits)';
        WHEN 'date_type' THEN v_problem := 'expected a date string, got ' || v_got;
        WHEN 'date' THEN v_problem := v_show || ' is not a date (YYYY-MM-DD)';
        WHEN 'date_invalid' THEN v_problem := v_show || ' is not a valid date';
        WHEN 'bool_type' THEN v_problem := 'expected true or false, got ' || v_got;
        WHEN 'period_type' THEN v_problem := 'expected a date or timestamp string, got ' || v_got;
        WHEN 'period_form' THEN
            v_problem := v_show || ' is not a date (YYYY-MM-DD) or timestamp (YYYY-MM-DDTHH:MM[:SS[.f]][Z|±HH[:MM]])';
        WHEN 'period_field' THEN v_problem := v_show || ' has an impossible date or time field';
        WHEN 'period_range' THEN v_problem := v_show || ' is outside years 0001-9999 in the register time zone';
        WHEN 'object' THEN v_problem := 'expected an object, got ' || jsonb_typeof(p_value);
        WHEN 'unknown_key' THEN
            SELECT min(k) INTO v_key FROM jsonb_object_keys(p_value - string_to_array(p_arg, ',')) k;
            v_loc := v_loc || '.' || v_key;
            v_problem := 'unknown key';
        WHEN 'missing_key' THEN
            SELECT k INTO v_key FROM unnest(string_to_array(p_arg, ',')) WITH ORDINALITY u(k, n)
            WHERE NOT p_value ? k ORDER BY n LIMIT 1;
            v_problem := format('missing key "%s"', v_key);
        WHEN 'recorder_mismatch' THEN v_problem := 'recorder ' || v_show || ' does not match the command recorder';
        WHEN 'key_bytes' THEN v_problem := format('dimension values take %s bytes; the limit is 2048', p_arg);
        ELSE v_problem := p_code;
    END CASE;
    RETURN ARRAY[p_state, v_loc, v_problem, NULL];
END $$;

-- SQL expression calling _verr; p_loc, p_value and p_arg are SQL expressions.
CREATE FUNCTION accum._gen_err(p_state text, p_loc text, p_code text, p_value text DEFAULT 'NULL',
                               p_arg text DEFAULT 'NULL') RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT format('accum._verr(%L, %s, %L, %s, %s)', p_state, p_loc, p_code, p_value, p_arg)
$$;

-- SQL expression: error text[] {sqlstate, location, problem, detail} for the JSON value p_j
-- of a field of parsed type p_t (see _parse_type), or NULL when the value is valid.
-- p_loc is an SQL text expression naming the field; p_role is 'dimension', 'resource',
-- 'filter' or 'recorder'. The value must not be JSON null (callers check that first).
CREATE FUNCTION accum._gen_value_check(p_t text[], p_j text, p_loc text, p_role text) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    v_base text := p_t[2];
    v_txt text := format('(%s #>> ''{}'')', p_j);
    v_typ text := format('jsonb_typeof(%s)', p_j);
    v_num text := format('(%s #>> ''{}'')::numeric', p_j);
    v_limits text[];
    v_arms text := '';
BEGIN
    IF v_base IN ('smallint', 'integer', 'bigint', 'numeric') THEN
        -- Fast path: plain decimals that fit by their digit counts need no further check;
        -- anything else (exponents, trailing zeros, strings of other shapes) takes the arms below.
        -- (JSON number grammar: no leading zeros)
        v_arms := ' WHEN ' || v_txt || format(' ~ %L THEN NULL', CASE
            WHEN v_base = 'smallint' THEN '^-?(0|[1-9][0-9]{0,3})(\.0+)?$'
            WHEN v_base = 'integer' THEN '^-?(0|[1-9][0-9]{0,8})(\.0+)?$'
            WHEN v_base = 'bigint' THEN '^-?(0|[1-9][0-9]{0,17})(\.0+)?$'
            WHEN p_t[3] IS NOT NULL THEN
                '^-?' || CASE WHEN p_t[3]::int - p_t[4]::int > 0
                              THEN format('(0|[1-9][0-9]{0,%s})', least(p_t[3]::int - p_t[4]::int, 255) - 1)
                              ELSE '0' END
                      || CASE WHEN p_t[4]::int > 0 THEN format('(\.[0-9]{1,%s})?', least(p_t[4]::int, 255)) ELSE '' END || '$'
            ELSE '^-?(0|[1-9][0-9]{0,29})(\.[0-9]{1,30})?$' END);
        v_arms := v_arms
            || ' WHEN ' || v_typ || ' NOT IN (''number'', ''string'') THEN ' || accum._gen_err('22023', p_loc, 'num_type', p_j)
            || ' WHEN ' || v_typ || ' = ''string'' AND NOT (length(' || v_txt || ') <= 1100 AND ' || v_txt
                || ' ~ ''^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]{1,4})?$'') THEN CASE WHEN ' || v_txt
                || ' ~* ''^\s*[+-]?(nan|inf|infinity)\s*$'' THEN ' || accum._gen_err('22023', p_loc, 'nan', p_j)
                || ' ELSE ' || accum._gen_err('22P02', p_loc, 'decimal', p_j) || ' END';
        v_limits := CASE v_base
            WHEN 'smallint' THEN ARRAY['-32768', '32767']
            WHEN 'integer' THEN ARRAY['-2147483648', '2147483647']
            WHEN 'bigint' THEN ARRAY['-9223372036854775808', '9223372036854775807']
        END;
        IF v_limits IS NOT NULL THEN
            v_arms := v_arms
                || ' WHEN ' || v_num || ' <> trunc(' || v_num || ') THEN ' || accum._gen_err('22023', p_loc, 'integer', p_j)
                || ' WHEN ' || v_num || ' < ' || v_limits[1] || ' OR ' || v_num || ' > ' || v_limits[2] || ' THEN '
                    || accum._gen_err('22003', p_loc, 'range', p_j, quote_literal(p_t[1]));
        ELSIF p_t[3] IS NOT NULL THEN
            v_arms := v_arms
                || ' WHEN round(' || v_num || ', ' || p_t[4] || ') <> ' || v_num || ' THEN '
                    || accum._gen_err('22023', p_loc, 'scale', p_j,
                                      quote_literal(CASE WHEN p_role = 'resource' THEN 'resource' ELSE 'dimension' END || ':' || p_t[4]))
                || ' WHEN abs(' || v_num || ') >= ' || power(10::numeric, p_t[3]::int - p_t[4]::int)::text || ' THEN '
                    || accum._gen_err('22003', p_loc, 'digits', p_j, quote_literal(p_t[1]));
        END IF;
    ELSIF v_base IN ('text', 'varchar') THEN
        v_arms := ' WHEN ' || v_typ || ' <> ''string'' THEN ' || accum._gen_err('22023', p_loc, 'str_type', p_j);
        IF p_role = 'recorder' THEN
            v_arms := v_arms || ' WHEN ' || v_txt || ' = '''' THEN ' || accum._gen_err('22023', p_loc, 'empty', p_j);
        END IF;
        v_arms := v_arms || ' WHEN octet_length(' || v_txt || ') > 1024 THEN ' || accum._gen_err('22001', p_loc, 'bytes', p_j);
        IF v_base = 'varchar' THEN
            v_arms := v_arms || ' WHEN char_length(' || v_txt || ') > ' || p_t[3] || ' THEN '
                || accum._gen_err('22001', p_loc, 'chars', p_j, quote_literal(p_t[3]));
        END IF;
    ELSIF v_base = 'uuid' THEN
        v_arms := ' WHEN ' || v_typ || ' <> ''string'' THEN ' || accum._gen_err('22023', p_loc, 'uuid_type', p_j)
            || ' WHEN ' || v_txt || ' !~ ''^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'' THEN '
                || accum._gen_err('22P02', p_loc, 'uuid', p_j);
    ELSIF v_base = 'date' THEN
        v_arms := ' WHEN ' || v_typ || ' <> ''string'' THEN ' || accum._gen_err('22023', p_loc, 'date_type', p_j)
            || ' WHEN ' || v_txt || ' !~ ''^[0-9]{4}-[0-9]{2}-[0-9]{2}$'' THEN ' || accum._gen_err('22P02', p_loc, 'date', p_j)
            || ' WHEN NOT ' || accum._gen_valid_ymd('substr(' || v_txt || ', 1, 4)::int', 'substr(' || v_txt || ', 6, 2)::int',
                                                    'substr(' || v_txt || ', 9, 2)::int') || ' THEN '
                || accum._gen_err('22008', p_loc, 'date_invalid', p_j);
    ELSIF v_base = 'boolean' THEN
        v_arms := ' WHEN ' || v_typ || ' <> ''boolean'' THEN ' || accum._gen_err('22023', p_loc, 'bool_type', p_j);
    ELSE
        RAISE EXCEPTION 'unsupported type %', p_t[1];
    END IF;
    RETURN 'CASE' || v_arms || ' END';
END $$;

-- SQL expression converting a validated JSON value to its declared type.
CREATE FUNCTION accum._gen_conv(p_t text[], p_j text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE p_t[2]
        WHEN 'smallint' THEN format('(%s #>> ''{}'')::numeric::smallint', p_j)
        WHEN 'integer' THEN format('(%s #>> ''{}'')::numeric::integer', p_j)
        WHEN 'bigint' THEN format('(%s #>> ''{}'')::numeric::bigint', p_j)
        WHEN 'numeric' THEN format('(%s #>> ''{}'')::numeric', p_j)
        WHEN 'text' THEN format('(%s #>> ''{}'')', p_j)
        WHEN 'varchar' THEN format('(%s #>> ''{}'')', p_j)
        WHEN 'uuid' THEN format('(%s #>> ''{}'')::uuid', p_j)
        WHEN 'date' THEN format('(%s #>> ''{}'')::date', p_j)
        WHEN 'boolean' THEN format('(%s)::boolean', p_j)
    END
$$;

-- The PostgreSQL type of a stored column for a parsed type.
CREATE FUNCTION accum._col_type(p_t text[]) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN p_t[2] IN ('text', 'varchar') THEN p_t[1] || ' COLLATE "C"' ELSE p_t[1] END
$$;

-- SQL expression rendering a stored dimension value as JSON (SPEC §8).
CREATE FUNCTION accum._gen_dim_json(p_t text[], p_col text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE p_t[2]
        WHEN 'date' THEN format('to_jsonb(accum._date_text(%s))', p_col)
        WHEN 'uuid' THEN format('to_jsonb((%s)::text)', p_col)
        WHEN 'varchar' THEN format('to_jsonb((%s)::text)', p_col)
        ELSE format('to_jsonb(%s)', p_col)
    END
$$;

-- SQL expression rendering a summed resource (numeric) as JSON: numeric(p,s) with exactly
-- s decimals, integer and plain numeric in shortest exact form.
CREATE FUNCTION accum._gen_res_json(p_t text[], p_expr text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN p_t[2] = 'numeric' AND p_t[4] IS NOT NULL
                THEN format('to_jsonb(round(coalesce(%s, 0), %s))', p_expr, p_t[4])
                ELSE format('to_jsonb(trim_scale(coalesce(%s, 0)))', p_expr)
    END
$$;

-- jsonb_build_object(...) of every resource from p_fmt-formatted expressions.
CREATE FUNCTION accum._gen_res_object(p_names text[], p_types text[], p_fmt text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 'jsonb_build_object(' || string_agg(
        format('%L, %s', n, accum._gen_res_json(accum._parse_type(p_types[i]), format(p_fmt, n))), ', ' ORDER BY i)
        || ')'
    FROM unnest(p_names) WITH ORDINALITY AS u(n, i)
$$;

CREATE FUNCTION accum._gen_dim_object(p_names text[], p_types text[], p_fmt text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 'jsonb_build_object(' || string_agg(
        format('%L, %s', n, accum._gen_dim_json(accum._parse_type(p_types[i]), format(p_fmt, n))), ', ' ORDER BY i)
        || ')'
    FROM unnest(p_names) WITH ORDINALITY AS u(n, i)
$$;

-- SQL expression: bytes the dimension values of a movement take (SPEC §4.2), or NULL when
-- every dimension is fixed-width (then the key is small by construction). p_ref formats a
-- dimension name (%1$s quoted literal, %2$s quoted identifier) into a text-valued expression.
CREATE FUNCTION accum._gen_key_bytes(p_reg accum._registers, p_ref text) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    v_bytes text[] := '{}';
    v_fixed integer := 0;
    v_ref text;
BEGIN
    FOR i IN 1 .. cardinality(p_reg.dim_names) LOOP
        v_ref := format(p_ref, quote_literal(p_reg.dim_names[i]), quote_ident(p_reg.dim_names[i]));
        CASE (accum._parse_type(p_reg.dim_types[i]))[2]
            WHEN 'text', 'varchar' THEN v_bytes := v_bytes || format('octet_length(%s)', v_ref);
            WHEN 'numeric' THEN v_bytes := v_bytes || format('length(%s)', v_ref);
            WHEN 'smallint' THEN v_fixed := v_fixed + 2;
            WHEN 'integer', 'date' THEN v_fixed := v_fixed + 4;
            WHEN 'bigint' THEN v_fixed := v_fixed + 8;
            WHEN 'uuid' THEN v_fixed := v_fixed + 16;
            WHEN 'boolean' THEN v_fixed := v_fixed + 1;
        END CASE;
    END LOOP;
    IF cardinality(v_bytes) = 0 THEN
        RETURN NULL;
    END IF;
    RETURN format('(%s + %s)', array_to_string(v_bytes, ' + '), v_fixed);
END $$;

-- SQL expression checking one movement object p_m (an SQL expression of type jsonb)
-- located at p_loc (an SQL text expression). p_recorder_mode:
--   'required'  the movement must carry "recorder" (register_post)
--   'optional'  it may carry it; then it must equal the SQL text expression p_recorder
-- Returns NULL for a valid movement, else the first error text[].
CREATE FUNCTION accum._gen_movement_check(p_reg accum._registers, p_m text, p_loc text,
                                          p_recorder_mode text, p_recorder text DEFAULT NULL)
RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_names text[] := ARRAY['recorder', 'period'] || p_reg.dim_names || p_reg.res_names;
    v_required text[] := CASE WHEN p_recorder_mode = 'required' THEN ARRAY['recorder'] ELSE '{}' END
                         || ARRAY['period'] || p_reg.dim_names || p_reg.res_names;
    v_checks text[] := '{}';
    v_j text;
    v_floc text;
    v_rec_t text[] := accum._parse_type(p_reg.recorder_type);
    v_bytes text;
    v_t text[];
BEGIN
    IF p_reg.recorder_type = 'bigint' THEN
        v_rec_t := ARRAY['bigint', 'bigint', NULL, NULL];
    END IF;
    -- recorder
    v_j := format('(%s)->''recorder''', p_m);
    v_floc := format('%s || ''.recorder''', p_loc);
    IF p_recorder_mode = 'required' THEN
        v_checks := v_checks || format('CASE WHEN jsonb_typeof(%s) = ''null'' THEN %s ELSE %s END',
            v_j, accum._gen_err('22004', v_floc, 'null'), accum._gen_value_check(v_rec_t, v_j, v_floc, 'recorder'));
    ELSE
        v_checks := v_checks || format(
            'CASE WHEN NOT (%1$s) ? ''recorder'' THEN NULL WHEN jsonb_typeof(%2$s) = ''null'' THEN %3$s '
            || 'ELSE coalesce(%4$s, CASE WHEN (%5$s)::text IS DISTINCT FROM %6$s THEN %7$s END) END',
            p_m, v_j, accum._gen_err('22004', v_floc, 'null'), accum._gen_value_check(v_rec_t, v_j, v_floc, 'recorder'),
            accum._gen_conv(v_rec_t, v_j), p_recorder, accum._gen_err('22023', v_floc, 'recorder_mismatch', v_j));
    END IF;
    -- period
    v_checks := v_checks || accum._gen_period_check(p_reg, format('(%s)->''period''', p_m),
                                                    format('%s || ''.period''', p_loc));
    -- dimensions, then resources
    FOR i IN 1 .. array_length(p_reg.dim_names, 1) LOOP
        v_t := accum._parse_type(p_reg.dim_types[i]);
        v_j := format('(%s)->%L', p_m, p_reg.dim_names[i]);
        v_floc := format('%s || %L', p_loc, '.' || p_reg.dim_names[i]);
        v_checks := v_checks || format('CASE WHEN jsonb_typeof(%s) = ''null'' THEN %s ELSE %s END',
            v_j, accum._gen_err('22004', v_floc, 'null'), accum._gen_value_check(v_t, v_j, v_floc, 'dimension'));
    END LOOP;
    FOR i IN 1 .. array_length(p_reg.res_names, 1) LOOP
        v_t := accum._parse_type(p_reg.res_types[i]);
        v_j := format('(%s)->%L', p_m, p_reg.res_names[i]);
        v_floc := format('%s || %L', p_loc, '.' || p_reg.res_names[i]);
        v_checks := v_checks || format('CASE WHEN jsonb_typeof(%s) = ''null'' THEN %s ELSE %s END',
            v_j, accum._gen_err('22004', v_floc, 'null'), accum._gen_value_check(v_t, v_j, v_floc, 'resource'));
    END LOOP;
    -- the whole key must stay far below the B-tree row limit (SPEC §4.2)
    v_bytes := accum._gen_key_bytes(p_reg, '((' || p_m || ')->%1$s #>> ''{}'')');
    IF v_bytes IS NOT NULL THEN
        v_checks := v_checks || format('CASE WHEN %s > 2048 THEN %s END', v_bytes,
                                       accum._gen_err('54000', p_loc, 'key_bytes', 'NULL', v_bytes || '::text'));
    END IF;
    RETURN format(
        'CASE WHEN jsonb_typeof(%1$s) <> ''object'' THEN %6$s '
        || 'WHEN (%1$s) - %3$L::text[] <> ''{}''::jsonb THEN %7$s '
        || 'WHEN NOT (%1$s) ?& %4$L::text[] THEN %8$s '
        || 'ELSE coalesce(%5$s) END',
        p_m, p_loc, v_names, v_required, array_to_string(v_checks, ', '),
        accum._gen_err('22023', p_loc, 'object', p_m),
        accum._gen_err('42703', p_loc, 'unknown_key', p_m, quote_literal(array_to_string(v_names, ','))),
        accum._gen_err('22023', p_loc, 'missing_key', p_m, quote_literal(array_to_string(v_required, ','))));
END $$;

-- The instant of a valid period: ISO input parses the same under every DateStyle; without an
-- offset the wall time is taken in the register zone, never the session's.
CREATE FUNCTION accum._gen_period_value(p_reg accum._registers, p_j text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT format('CASE WHEN right(%1$s #>> ''{}'', 1) = ''Z'' OR strpos(substr(%1$s #>> ''{}'', 11), ''+'') > 0 '
                  'OR strpos(substr(%1$s #>> ''{}'', 11), ''-'') > 0 THEN (%1$s #>> ''{}'')::timestamptz '
                  'ELSE (%1$s #>> ''{}'')::timestamp AT TIME ZONE %2$L END', p_j, p_reg.time_zone)
$$;

CREATE FUNCTION accum._gen_period_check(p_reg accum._registers, p_j text, p_loc text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT format(
        'CASE WHEN jsonb_typeof(%1$s) = ''null'' THEN %9$s '
        'WHEN jsonb_typeof(%1$s) <> ''string'' THEN %10$s '
        -- the range pattern implies the form, so a valid period costs one match
        'WHEN (%1$s #>> ''{}'') !~ %4$L THEN CASE WHEN (%1$s #>> ''{}'') !~ %3$L THEN %11$s ELSE %12$s END '
        'WHEN (substr(%1$s #>> ''{}'', 9, 2) > ''28'' OR left(%1$s #>> ''{}'', 4) = ''0000'') AND NOT %5$s THEN %12$s '
        -- only the first and last year can leave 0001-9999 through an offset or the zone
        'WHEN left(%1$s #>> ''{}'', 4) IN (''0001'', ''9999'') AND NOT (%6$s >= %7$L::timestamptz AND %6$s < %8$L::timestamptz) '
            'THEN %13$s '
        'END',
        p_j, p_loc, accum._period_form_regex(), accum._period_range_regex(),
        accum._gen_valid_ymd(format('substr(%s #>> ''{}'', 1, 4)::int', p_j), format('substr(%s #>> ''{}'', 6, 2)::int', p_j),
                             format('substr(%s #>> ''{}'', 9, 2)::int', p_j)),
        accum._gen_period_value(p_reg, p_j),
        accum._ts_lit(make_timestamp(1, 1, 1, 0, 0, 0) AT TIME ZONE p_reg.time_zone),
        accum._ts_lit(make_timestamp(10000, 1, 1, 0, 0, 0) AT TIME ZONE p_reg.time_zone),
        accum._gen_err('22004', p_loc, 'null'),
        accum._gen_err('22007', p_loc, 'period_type', p_j),
        accum._gen_err('22007', p_loc, 'period_form', p_j),
        accum._gen_err('22008', p_loc, 'period_field', p_j),
        accum._gen_err('22008', p_loc, 'period_range', p_j))
$$;

-- Column list with types for CREATE TABLE.
CREATE FUNCTION accum._gen_columns(p_names text[], p_types text[], p_numeric boolean) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(string_agg(format('%I %s NOT NULL', n,
        CASE WHEN p_numeric THEN 'numeric' ELSE accum._col_type(accum._parse_type(p_types[i])) END), ', ' ORDER BY i), '')
    FROM unnest(p_names) WITH ORDINALITY AS u(n, i)
$$;
