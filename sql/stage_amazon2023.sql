-- Amazon Reviews 2023 review lines ({"user_id", "parent_asin", "rating", "timestamp" in ms, ...}).
-- Items are keyed by parent_asin, as the 2023 release recommends.
CREATE OR REPLACE TEMP TABLE stage_interactions AS
WITH p AS (
    SELECT line, source_row, TRY_CAST(line AS JSON) AS j
    FROM src_lines WHERE line IS NOT NULL AND trim(line) <> '')
SELECT json_extract_string(j, '$.user_id') AS user_id,
       json_extract_string(j, '$.parent_asin') AS item_id,
       json_extract_string(j, '$.rating') AS rating,
       json_extract_string(j, '$.timestamp') AS ts,
       $source_file AS source_file, source_row, line AS raw,
       CASE WHEN j IS NULL OR json_type(j) <> 'OBJECT' THEN 'not a JSON object' END AS malformed
FROM p;
