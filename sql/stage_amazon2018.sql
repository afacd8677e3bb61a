-- Amazon Reviews 2018 review lines ({"reviewerID", "asin", "overall", "unixReviewTime", ...}); also the
-- 2014 release's reviews_<Category>_5.json lines (format amazon2014: the same fields, strict JSON).
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
