-- The warehouse tables. Every table carries its dataset or domain so one file holds them all.
SET TimeZone = 'UTC';
CREATE TABLE IF NOT EXISTS raw_interactions (
    dataset VARCHAR NOT NULL, user_id VARCHAR NOT NULL, item_id VARCHAR NOT NULL,
    rating DOUBLE NOT NULL, ts BIGINT NOT NULL, source_file VARCHAR, source_row BIGINT);
CREATE TABLE IF NOT EXISTS raw_items (
    dataset VARCHAR NOT NULL, item_id VARCHAR NOT NULL, title VARCHAR NOT NULL,
    categories VARCHAR[], source_file VARCHAR, source_row BIGINT);
-- kind: interaction or item; stage: the asset that quarantined the row
CREATE TABLE IF NOT EXISTS quarantine (
    dataset VARCHAR NOT NULL, stage VARCHAR NOT NULL, kind VARCHAR NOT NULL,
    source_file VARCHAR, source_row BIGINT, reason VARCHAR NOT NULL, detail VARCHAR, raw VARCHAR);
CREATE TABLE IF NOT EXISTS interactions (
    dataset VARCHAR NOT NULL, user_id VARCHAR NOT NULL, item_id VARCHAR NOT NULL,
    rating DOUBLE NOT NULL, ts BIGINT NOT NULL, label TINYINT NOT NULL, title VARCHAR NOT NULL,
    categories VARCHAR[]);
CREATE TABLE IF NOT EXISTS domain_interactions (
    domain VARCHAR NOT NULL, user_id VARCHAR NOT NULL, item_id VARCHAR NOT NULL,
    rating DOUBLE NOT NULL, ts BIGINT NOT NULL, label TINYINT NOT NULL, title VARCHAR NOT NULL);
-- landing files ingested by the landing sensor: one row per distinct content (sha256), so a file
-- dropped twice or renamed is ingested once
CREATE TABLE IF NOT EXISTS landed_files (
    sha256 VARCHAR PRIMARY KEY, dataset VARCHAR NOT NULL, file_name VARCHAR NOT NULL,
    rows_read BIGINT NOT NULL, rows_loaded BIGINT NOT NULL, ingested_at TIMESTAMPTZ NOT NULL);
