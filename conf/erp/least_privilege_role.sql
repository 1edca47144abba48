-- Least-privilege ERP role for the markdown pipeline: it owns its own schema and can touch nothing else.
-- Run once as a DBA in the ERP database, e.g. psql -d erp -f conf/erp/least_privilege_role.sql
-- Set the password from your secret store afterwards (ALTER ROLE markdown_pricing PASSWORD ...), never in this file.
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'markdown_pricing') THEN
    CREATE ROLE markdown_pricing LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
  END IF;
  EXECUTE format('GRANT CONNECT ON DATABASE %I TO markdown_pricing', current_database());
END
$$;

-- The pipeline creates its tables here (schema name = erp.schema in conf/base.toml): predictions, candidates, the
-- ledger, the metrics, and the buyers' rules (article_rules), which it only reads.
CREATE SCHEMA IF NOT EXISTS markdown AUTHORIZATION markdown_pricing;

-- No one but owners creates objects in public (the default since PostgreSQL 15; explicit for older servers).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- Readers such as the buyers' ERP screens get read access to everything the pipeline creates, e.g.:
--   GRANT USAGE ON SCHEMA markdown TO erp_reader;
--   ALTER DEFAULT PRIVILEGES FOR ROLE markdown_pricing IN SCHEMA markdown GRANT SELECT ON TABLES TO erp_reader;
-- The role behind the ERP's rule screens writes the buyers' rules, once the first run or `markdown-pricing erp
-- migrate` has created the table, e.g.:
--   GRANT USAGE ON SCHEMA markdown TO erp_rules_editor;
--   GRANT SELECT, INSERT, UPDATE, DELETE ON markdown.article_rules TO erp_rules_editor;
