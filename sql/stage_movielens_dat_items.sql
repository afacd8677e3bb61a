-- MovieLens-1M movies.dat lines (MovieID::Title::Genre|Genre) into stage_items.
CREATE OR REPLACE TEMP TABLE stage_items AS
WITH p AS (
    SELECT line, source_row, string_split(line, '::') AS f
    FROM src_lines WHERE line IS NOT NULL AND trim(line) <> '')
SELECT CASE WHEN len(f) = 3 THEN f[1] END AS item_id,
       CASE WHEN len(f) = 3 THEN f[2] END AS title,
       CASE WHEN len(f) = 3 THEN string_split(f[3], '|') END AS categories,
       $source_file AS source_file, source_row, line AS raw,
       CASE WHEN len(f) <> 3 THEN 'expected 3 fields separated by ::, found ' || len(f) END AS malformed
FROM p;
