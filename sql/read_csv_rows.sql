-- A delimited file with a header row, every column as VARCHAR; lines with the wrong number of
-- columns land in src_rejects (DuckDB's reject table) instead of failing the read. $compression
-- ('none', 'gzip' or 'zstd') comes from the file's first bytes: a name can lie ('auto' trusts it).
DROP TABLE IF EXISTS src_rejects;
DROP TABLE IF EXISTS src_rejects_scan;
CREATE OR REPLACE TEMP TABLE src_read AS
SELECT *, row_number() OVER () AS accepted_row
FROM read_csv($path, header = true, all_varchar = true, delim = $delim, quote = $quote,
              encoding = $encoding, compression = $compression, auto_detect = true,
              store_rejects = true, rejects_table = 'src_rejects', rejects_scan = 'src_rejects_scan');
-- source_row: the row's line in the file (header = line 1), the numbering src_rejects.line uses,
-- so a quarantined row points at its line whether the reader or the validation rejected it.
-- The reader skips rejected lines, so the k-th accepted row sits on the k-th line after the
-- header that was not rejected. (Exact unless a blank line or a quoted line break comes first:
-- the reader drops blank lines and counts a quoted multi-line record once.)
CREATE OR REPLACE TEMP TABLE src AS
WITH bad AS (SELECT DISTINCT line FROM src_rejects),
free AS (
    SELECT n AS line, row_number() OVER (ORDER BY n) AS k
    FROM range(2, 2 + (SELECT count(*) FROM src_read) + (SELECT count(*) FROM bad)) AS r(n)
    WHERE n NOT IN (SELECT line FROM bad))
SELECT s.* EXCLUDE (accepted_row), f.line AS source_row
FROM src_read s JOIN free f ON f.k = s.accepted_row;
DROP TABLE src_read;
