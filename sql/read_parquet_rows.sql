-- A Parquet file, every column cast to VARCHAR so the same validation serves every format.
DROP TABLE IF EXISTS src_rejects;
CREATE OR REPLACE TEMP TABLE src_rejects (line BIGINT, csv_line VARCHAR, error_message VARCHAR);
CREATE OR REPLACE TEMP TABLE src AS
SELECT COLUMNS(*)::VARCHAR, row_number() OVER () AS source_row FROM read_parquet($path);
