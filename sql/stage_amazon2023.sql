-- Amazon Reviews 2023 review lines ({"user_id", "parent_asin", "rating", "timestamp" in ms, ...}).
-- Items are keyed by parent_asin, as the 2023 release recommends.
-- A view over src_lines (sql/read_lines.sql); a line is checked (is_json_object) and its fields
-- taken in one call: two parses of it, not one per field.
CREATE OR REPLACE TEMP VIEW stage_interactions AS
WITH p AS (
    SELECT *, is_json_object(line) AS ok FROM src_lines),
f AS (
    SELECT *, CASE WHEN ok THEN json_extract_string(line, ['$.user_id', '$.parent_asin', '$.rating',
                                                             '$.timestamp']) END AS f
    FROM p)
SELECT f[1] AS user_id, f[2] AS item_id, f[3] AS rating, f[4] AS ts, source_file, source_row, line AS raw,
       CASE WHEN NOT ok THEN 'not a JSON object' END AS malformed
FROM f;
