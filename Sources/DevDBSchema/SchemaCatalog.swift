/// The query that reads a database's schema from pg_catalog as one JSON array of
/// `{"kind", "identity", "properties"}` (SchemaModel.parse reads it). It runs the same on
/// PostgreSQL 15, 17 and 18, and leaves out what would only be noise in a diff:
/// - system schemas, and objects an extension made (the extension is compared instead);
/// - what partitions inherit from their parent (columns, cloned indexes, constraints and
///   triggers), and indexes that back a primary key, unique or exclusion constraint;
/// - NOT NULL constraints (17+ lists them in pg_constraint; `not null` of the column and of
///   the domain says it on every major);
/// - owners, privileges, statistics and data (sequence values).
public enum SchemaCatalog {
    public static let query = #"""
        WITH ns AS (
          SELECT oid, nspname FROM pg_namespace
          WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND nspname NOT LIKE 'pg\_toast%' AND nspname NOT LIKE 'pg\_temp\_%'
        ),
        ext AS (SELECT classid, objid FROM pg_depend WHERE deptype = 'e'),
        objs AS (
          SELECT 'extension'::text AS kind, e.extname::text AS identity, json_build_object('version', e.extversion, 'schema', n.nspname) AS properties
          FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
          UNION ALL
          SELECT 'schema', format('%I', n.nspname), json_build_object()
          FROM ns n WHERE n.nspname <> 'public' AND NOT EXISTS (SELECT 1 FROM ext WHERE classid = 'pg_namespace'::regclass AND objid = n.oid)
          UNION ALL
          SELECT CASE WHEN c.relkind IN ('r', 'p', 'f') THEN 'table' WHEN c.relkind = 'v' THEN 'view' WHEN c.relkind = 'm' THEN 'materialized view' ELSE 'sequence' END,
            format('%I.%I', n.nspname, c.relname),
            CASE
              WHEN c.relkind IN ('r', 'p', 'f') THEN json_build_object(
                'kind', CASE WHEN c.relkind = 'p' THEN 'partitioned' WHEN c.relkind = 'f' THEN 'foreign' WHEN c.relispartition THEN 'partition' ELSE 'ordinary' END,
                'partition key', CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END,
                'partition of', (SELECT format('%I.%I', pn.nspname, pc.relname) FROM pg_inherits i JOIN pg_class pc ON pc.oid = i.inhparent
                                 JOIN pg_namespace pn ON pn.oid = pc.relnamespace WHERE i.inhrelid = c.oid AND c.relispartition),
                'partition bound', CASE WHEN c.relispartition THEN pg_get_expr(c.relpartbound, c.oid) END,
                'inherits', (SELECT string_agg(format('%I.%I', pn.nspname, pc.relname), ', ' ORDER BY i.inhseqno) FROM pg_inherits i
                             JOIN pg_class pc ON pc.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = pc.relnamespace
                             WHERE i.inhrelid = c.oid AND NOT c.relispartition),
                'persistence', CASE WHEN c.relpersistence = 'u' THEN 'unlogged' END,
                'row level security', CASE WHEN c.relrowsecurity THEN 'enabled' END)
              WHEN c.relkind IN ('v', 'm') THEN json_build_object('definition', pg_get_viewdef(c.oid))
              ELSE (SELECT json_build_object('type', format_type(s.seqtypid, NULL), 'start', s.seqstart::text, 'increment', s.seqincrement::text,
                      'min', s.seqmin::text, 'max', s.seqmax::text, 'cycle', CASE WHEN s.seqcycle THEN 'yes' ELSE 'no' END,
                      'owned by', (SELECT format('%I.%I.%I', dn.nspname, dc.relname, a.attname) FROM pg_depend d
                                   JOIN pg_class dc ON dc.oid = d.refobjid JOIN pg_namespace dn ON dn.oid = dc.relnamespace
                                   JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                                   WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass
                                     AND d.deptype IN ('a', 'i') LIMIT 1))
                    FROM pg_sequence s WHERE s.seqrelid = c.oid)
            END
          FROM pg_class c JOIN ns n ON n.oid = c.relnamespace
          WHERE c.relkind IN ('r', 'p', 'f', 'v', 'm', 'S')
            AND NOT EXISTS (SELECT 1 FROM ext WHERE classid = 'pg_class'::regclass AND objid = c.oid)
          UNION ALL
          SELECT 'column', format('%I.%I.%I', n.nspname, c.relname, a.attname),
            json_build_object('type', format_type(a.atttypid, a.atttypmod), 'not null', CASE WHEN a.attnotnull THEN 'yes' ELSE 'no' END,
              'default', CASE WHEN a.attgenerated = '' THEN pg_get_expr(ad.adbin, ad.adrelid) END,
              'generated', CASE WHEN a.attgenerated <> '' THEN pg_get_expr(ad.adbin, ad.adrelid) END,
              'identity', CASE a.attidentity WHEN 'a' THEN 'always' WHEN 'd' THEN 'by default' END,
              'collation', CASE WHEN a.attcollation <> t.typcollation THEN (SELECT collname::text FROM pg_collation WHERE oid = a.attcollation) END)
          FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN ns n ON n.oid = c.relnamespace JOIN pg_type t ON t.oid = a.atttypid
          LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
          WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'f') AND NOT c.relispartition
            AND NOT EXISTS (SELECT 1 FROM ext WHERE classid = 'pg_class'::regclass AND objid = c.oid)
          UNION ALL
          SELECT 'constraint', format('%I.%I.%I', n.nspname, c.relname, co.conname),
            json_build_object('type', CASE co.contype WHEN 'p' THEN 'primary key' WHEN 'u' THEN 'unique' WHEN 'f' THEN 'foreign key' WHEN 'c' THEN 'check'
                                                      WHEN 'x' THEN 'exclusion' WHEN 't' THEN 'trigger' ELSE co.contype::text END,
                              'definition', pg_get_constraintdef(co.oid))
          FROM pg_constraint co JOIN pg_class c ON c.oid = co.conrelid JOIN ns n ON n.oid = c.relnamespace
          WHERE co.contype <> 'n' AND co.conparentid = 0 AND co.conislocal
            AND NOT EXISTS (SELECT 1 FROM ext WHERE classid = 'pg_class'::regclass AND objid = c.oid)
          UNION ALL
          SELECT 'index', format('%I.%I', n.nspname, ic.relname),
            json_build_object('table', format('%I.%I', tn.nspname, c.relname), 'definition', pg_get_indexdef(i.indexrelid))
          FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN ns n ON n.oid = ic.relnamespace
          JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace tn ON tn.oid = c.relnamespace
          WHERE NOT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = i.indexrelid)
            AND NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conindid = i.indexrelid AND conrelid = i.indrelid AND contype IN ('p', 'u', 'x'))
            AND NOT EXISTS (SELECT 1 FROM ext WHERE classid = 'pg_class'::regclass AND objid IN (c.oid, ic.oid))
          UNION ALL
          SELECT CASE p.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate' ELSE 'function' END,
            format('%I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)),
            CASE WHEN p.prokind = 'a' THEN json_build_object('returns', pg_get_function_result(p.oid))
                 ELSE json_build_object('returns', pg_get_function_result(p.oid), 'language', l.lanname, 'definition', pg_get_functiondef(p.oid)) END
          FROM pg_proc p JOIN ns n ON n.oid = p.pronamespace JOIN pg_language l ON l.oid = p.prolang
          WHERE NOT EXISTS (SELECT 1 FROM ext WHERE classid = 'pg_proc'::regclass AND objid = p.oid)
          UNION ALL
          SELECT 'trigger', format('%I.%I.%I', n.nspname, c.relname, t.tgname), json_build_object('definition', pg_get_triggerdef(t.oid))
          FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN ns n ON n.oid = c.relnamespace
          WHERE NOT t.tgisinternal AND t.tgparentid = 0
          UNION ALL
          SELECT 'type', format('%I.%I', n.nspname, t.typname),
            json_build_object('kind', CASE t.typtype WHEN 'e' THEN 'enum' WHEN 'c' THEN 'composite' WHEN 'r' THEN 'range' END,
              'labels', CASE WHEN t.typtype = 'e' THEN (SELECT string_agg(quote_literal(enumlabel), ', ' ORDER BY enumsortorder) FROM pg_enum WHERE enumtypid = t.oid) END,
              'attributes', CASE WHEN t.typtype = 'c' THEN (SELECT string_agg(format('%I %s', a.attname, format_type(a.atttypid, a.atttypmod)), ', ' ORDER BY a.attnum)
                                                          FROM pg_attribute a WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped) END,
              'subtype', CASE WHEN t.typtype = 'r' THEN (SELECT format_type(rngsubtype, NULL) FROM pg_range WHERE rngtypid = t.oid) END)
          FROM pg_type t JOIN ns n ON n.oid = t.typnamespace
          WHERE (t.typtype IN ('e', 'r') OR (t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c'))
            AND NOT EXISTS (SELECT 1 FROM ext WHERE classid = 'pg_type'::regclass AND objid = t.oid)
          UNION ALL
          SELECT 'domain', format('%I.%I', n.nspname, t.typname),
            json_build_object('type', format_type(t.typbasetype, t.typtypmod), 'not null', CASE WHEN t.typnotnull THEN 'yes' ELSE 'no' END,
              'default', t.typdefault,
              'constraints', (SELECT string_agg(format('%I %s', conname, pg_get_constraintdef(oid)), '; ' ORDER BY conname)
                              FROM pg_constraint WHERE contypid = t.oid AND contype <> 'n'))
          FROM pg_type t JOIN ns n ON n.oid = t.typnamespace
          WHERE t.typtype = 'd' AND NOT EXISTS (SELECT 1 FROM ext WHERE classid = 'pg_type'::regclass AND objid = t.oid)
        )
        SELECT coalesce(json_agg(json_build_object('kind', kind, 'identity', identity, 'properties', properties) ORDER BY kind, identity), '[]') FROM objs
        """#
}
