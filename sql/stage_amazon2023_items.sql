-- Amazon Reviews 2023 meta lines ({"parent_asin", "title", "main_category", "categories": [...]}).
-- A view over src_lines (sql/read_lines.sql); a line is checked (is_json_object) and its fields
-- taken in one call: two parses of it, not one per field.
CREATE OR REPLACE TEMP VIEW stage_items AS
WITH p AS (
    SELECT *, is_json_object(line) AS ok FROM src_lines),
f AS (
    SELECT *, CASE WHEN ok THEN json_extract(line, ['$.parent_asin', '$.title', '$.main_category',
                                                      '$.categories']) END AS f
    FROM p)
SELECT f[1] ->> '$' AS item_id,
       f[2] ->> '$' AS title,
       list_filter(list_concat([f[3] ->> '$'], CASE WHEN json_type(f[4]) = 'ARRAY' THEN f[4] ->> '$[*]' ELSE [] END),
                   c -> c IS NOT NULL AND c <> '') AS categories,
       source_file, source_row, line AS raw,
       CASE WHEN NOT ok THEN 'not a JSON object' END AS malformed
FROM f;
