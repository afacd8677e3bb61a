-- Amazon Reviews 2018 review lines ({"reviewerID", "asin", "overall", "unixReviewTime", ...}); also the
-- 2014 release's reviews_<Category>_5.json lines (format amazon2014: the same fields, strict JSON).
-- A view over src_lines (sql/read_lines.sql); a line is checked (is_json_object) and its fields
-- taken in one call: two parses of it, not one per field.
CREATE OR REPLACE TEMP VIEW stage_interactions AS
WITH p AS (
    SELECT *, is_json_object(line) AS ok FROM src_lines),
f AS (
    SELECT *, CASE WHEN ok THEN json_extract_string(line, ['$.reviewerID', '$.asin', '$.overall',
                                                             '$.unixReviewTime']) END AS f
    FROM p)
SELECT f[1] AS user_id, f[2] AS item_id, f[3] AS rating, f[4] AS ts, source_file, source_row, line AS raw,
       CASE WHEN NOT ok THEN 'not a JSON object' END AS malformed
FROM f;
