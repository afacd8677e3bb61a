-- MovieLens-1M movies.dat lines (MovieID::Title::Genre|Genre): a view over src_lines
-- (sql/read_lines.sql).
CREATE OR REPLACE TEMP VIEW stage_items AS
WITH p AS (
    SELECT *, string_split(line, '::') AS f FROM src_lines)
SELECT CASE WHEN len(f) = 3 THEN f[1] END AS item_id,
       CASE WHEN len(f) = 3 THEN f[2] END AS title,
       CASE WHEN len(f) = 3 THEN string_split(f[3], '|') END AS categories,
       source_file, source_row, line AS raw,
       CASE WHEN len(f) <> 3 THEN 'expected 3 fields separated by ::, found ' || len(f) END AS malformed
FROM p;
