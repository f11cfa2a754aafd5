-- The read-only role for dashboards (CONTRACT "What dashboards read").
--
-- understudy_reader may read recommendations_open, recommendations and
-- audit_findings_latest, and nothing else of understudy's: not the raw
-- events, dead letters, offsets, policies or audit tables.  It is created
-- NOLOGIN; an operator gives a dashboard a login by granting membership to
-- a login role or by altering it (docs/schema.md).  Roles are cluster-wide:
-- when several databases of one cluster run this migration, the role is
-- created by the first and reused by the others.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'understudy_reader') THEN
        BEGIN
            CREATE ROLE understudy_reader NOLOGIN;
            COMMENT ON ROLE understudy_reader IS
                'understudy dashboards: SELECT on recommendations_open, recommendations and audit_findings_latest only.';
        EXCEPTION
            -- Another database's migration created it since we looked.
            WHEN duplicate_object OR unique_violation THEN
                NULL;
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'role understudy_reader does not exist and % may not create it',
                                current_user
                    USING ERRCODE = 'insufficient_privilege',
                          HINT = 'create it once as a superuser: CREATE ROLE understudy_reader NOLOGIN;'
                                 ' or give the migrating user CREATEROLE';
        END;
    END IF;
END
$$;

-- Tables and views carry no PUBLIC privileges unless the cluster's default
-- privileges add some; take away anything such defaults granted, to PUBLIC
-- or to the reader, before granting exactly what the contract promises.
REVOKE ALL ON TABLE action_events, state_events, feedback_events, dead_letters, ingest_offsets,
    policies, recommendations, recommendations_open, audit_runs, audit_findings,
    audit_findings_latest
    FROM PUBLIC;
REVOKE ALL ON TABLE action_events, state_events, feedback_events, dead_letters, ingest_offsets,
    policies, recommendations, recommendations_open, audit_runs, audit_findings,
    audit_findings_latest
    FROM understudy_reader;

DO $$
DECLARE
    s text := current_schema();
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO understudy_reader', s);
    -- Before PostgreSQL 15 every role could create objects in the public
    -- schema; the reader must not, so take that away where it is still
    -- granted and we own the schema.
    IF EXISTS (SELECT 1
               FROM pg_catalog.pg_namespace AS n, aclexplode(n.nspacl) AS a
               WHERE n.nspname = s AND a.grantee = 0 AND a.privilege_type = 'CREATE')
       AND pg_has_role((SELECT nspowner FROM pg_catalog.pg_namespace WHERE nspname = s), 'USAGE')
    THEN
        EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM PUBLIC', s);
    END IF;
END
$$;

GRANT SELECT ON TABLE recommendations_open, recommendations, audit_findings_latest
    TO understudy_reader;
