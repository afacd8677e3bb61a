-- Review lines of a JSON-lines format: Amazon Reviews 2018 ({"reviewerID", "asin", "overall",
-- "unixReviewTime", ...}, also the 2014 release's reviews_<Category>_5.json) and 2023 ({"user_id",
-- "parent_asin", "rating", "timestamp" in ms, ...}; items keyed by parent_asin, as that release
-- recommends). $paths: the JSON paths of user, item, rating and time, from the format's entry in
-- models/formats.py (`review_paths`).
-- A view over src_lines (sql/read_lines.sql), so the paths are a variable (a view holds no bound
-- parameter); a line is checked (is_json_object) and its fields taken in one call: two parses of
-- it, not one per field.
SET VARIABLE review_paths = $paths;
CREATE OR REPLACE TEMP VIEW stage_interactions AS
WITH p AS (
    SELECT *, is_json_object(line) AS ok FROM src_lines),
f AS (
    SELECT *, CASE WHEN ok THEN json_extract_string(line, getvariable('review_paths')) END AS f
    FROM p)
SELECT f[1] AS user_id, f[2] AS item_id, f[3] AS rating, f[4] AS ts, source_file, source_row, line AS raw,
       CASE WHEN NOT ok THEN 'not a JSON object' END AS malformed
FROM f;
