-- Two roles for an ERP whose team owns the pipeline's tables: the owner creates and upgrades them, the weekly run
-- only reads and writes their rows and issues no DDL.
--   markdown_pricing_owner  owns schema markdown; runs `markdown-pricing erp migrate` once, and again after an
--                           upgrade of the pipeline (versioned: it applies only the steps the schema lacks).
--   markdown_pricing_run    the weekly run: USAGE on the schema, SELECT, INSERT, UPDATE, DELETE on the tables it
--                           writes (predictions, candidates, publish_ledger, model_metrics), SELECT on the buyers'
--                           rules (article_rules) and on schema_migrations, no CREATE anywhere. A run stops before
--                           any Spark work, naming what is missing, when the tables are not current or a privilege
--                           is lacking.
-- Run once as a DBA in the ERP database, e.g. psql -d erp -f conf/erp/data_role.sql; then, connected as
-- markdown_pricing_owner, `markdown-pricing erp migrate`; then run the week connected as markdown_pricing_run.
-- Set the passwords from your secret store afterwards (ALTER ROLE ... PASSWORD ...), never in this file.
-- (conf/erp/least_privilege_role.sql is the one-role alternative: the run owns its schema and migrates by itself.)
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'markdown_pricing_owner') THEN
    CREATE ROLE markdown_pricing_owner LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'markdown_pricing_run') THEN
    CREATE ROLE markdown_pricing_run LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
  END IF;
  EXECUTE format('GRANT CONNECT ON DATABASE %I TO markdown_pricing_owner, markdown_pricing_run', current_database());
END
$$;

-- Schema name = erp.schema in conf/base.toml.
CREATE SCHEMA IF NOT EXISTS markdown AUTHORIZATION markdown_pricing_owner;
GRANT USAGE ON SCHEMA markdown TO markdown_pricing_run;

-- Tables the owner creates from now on (every migration, including the version table schema_migrations, which the
-- run only reads) and those it created before this script ran.
ALTER DEFAULT PRIVILEGES FOR ROLE markdown_pricing_owner IN SCHEMA markdown
  GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO markdown_pricing_run;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA markdown TO markdown_pricing_run;

-- The buyers' rules, markdown.article_rules: the ERP's rule screens write them, the run only reads them (SELECT is
-- all it needs there). The default privileges above give the run write access to them too; to take it away, and to
-- let the role behind the screens write them, once `markdown-pricing erp migrate` has created the table:
--   REVOKE INSERT, UPDATE, DELETE ON markdown.article_rules FROM markdown_pricing_run;
--   GRANT USAGE ON SCHEMA markdown TO erp_rules_editor;
--   GRANT SELECT, INSERT, UPDATE, DELETE ON markdown.article_rules TO erp_rules_editor;
-- (Its id is an identity column: inserting needs no privilege on a sequence.) A rules table the ERP team created
-- before the first migrate, with columns of its own besides the contract's, is left as it is.

-- No one but owners creates objects in public (the default since PostgreSQL 15; explicit for older servers).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- Readers such as the buyers' ERP screens get read access to the tables, e.g.:
--   GRANT USAGE ON SCHEMA markdown TO erp_reader;
--   ALTER DEFAULT PRIVILEGES FOR ROLE markdown_pricing_owner IN SCHEMA markdown GRANT SELECT ON TABLES TO erp_reader;
