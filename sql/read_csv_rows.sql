-- A delimited file with a header row, every column as VARCHAR; lines with the wrong number of
-- columns land in src_rejects (DuckDB's reject table) instead of failing the read.
DROP TABLE IF EXISTS src_rejects;
DROP TABLE IF EXISTS src_rejects_scan;
CREATE OR REPLACE TEMP TABLE src AS
SELECT *, row_number() OVER () AS source_row
FROM read_csv($path, header = true, all_varchar = true, delim = $delim, quote = $quote,
              encoding = $encoding, compression = 'auto', auto_detect = true,
              store_rejects = true, rejects_table = 'src_rejects', rejects_scan = 'src_rejects_scan');
