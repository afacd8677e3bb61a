-- MovieLens-1M ratings.dat lines (UserID::MovieID::Rating::Timestamp): a view over src_lines
-- (sql/read_lines.sql).
CREATE OR REPLACE TEMP VIEW stage_interactions AS
WITH p AS (
    SELECT *, string_split(line, '::') AS f FROM src_lines)
SELECT CASE WHEN len(f) = 4 THEN f[1] END AS user_id,
       CASE WHEN len(f) = 4 THEN f[2] END AS item_id,
       CASE WHEN len(f) = 4 THEN f[3] END AS rating,
       CASE WHEN len(f) = 4 THEN f[4] END AS ts,
       source_file, source_row, line AS raw,
       CASE WHEN len(f) <> 4 THEN 'expected 4 fields separated by ::, found ' || len(f) END AS malformed
FROM p;
