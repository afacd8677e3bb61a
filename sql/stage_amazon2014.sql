-- Amazon Reviews 2014 review lines (reviews_<Category>_5.json: {"reviewerID", "asin", "overall",
-- "unixReviewTime", "helpful": [2, 3], ...}): strict JSON, the fields of the 2018 release.
CREATE OR REPLACE TEMP TABLE stage_interactions AS
WITH p AS (
    SELECT line, source_row, TRY_CAST(line AS JSON) AS j
    FROM src_lines WHERE line IS NOT NULL AND trim(line) <> '')
SELECT json_extract_string(j, '$.reviewerID') AS user_id,
       json_extract_string(j, '$.asin') AS item_id,
       json_extract_string(j, '$.overall') AS rating,
       json_extract_string(j, '$.unixReviewTime') AS ts,
       $source_file AS source_file, source_row, line AS raw,
       CASE WHEN j IS NULL OR json_type(j) <> 'OBJECT' THEN 'not a JSON object' END AS malformed
FROM p;
