-- Amazon Reviews 2014 meta lines (meta_<Category>.json): one Python dict literal a line, written by
-- Python's str(dict) ({'asin', 'title', 'categories': [['Toys & Games', 'Dolls'], ...], ...}), or
-- the same as JSON where a mirror re-encoded it. A line that is not JSON goes to py_literal_to_json
-- (models/data_prep.py: ast.literal_eval, never eval), which COALESCE calls only for those lines.
-- `categories` is a list of category paths: flattened, first occurrence kept, in order.
-- A view over src_lines (sql/read_lines.sql).
CREATE OR REPLACE TEMP VIEW stage_items AS
-- (The UDF's result goes through TRY_CAST, which keeps a reference to the Arrow strings it returns:
-- taken as plain VARCHAR into COALESCE, some of them were read after they were freed.)
WITH t AS (
    SELECT *, coalesce(TRY_CAST(line AS JSON), TRY_CAST(py_literal_to_json(line) AS JSON)) AS text
    FROM src_lines),
p AS (
    SELECT *, is_json_object(text) AS ok FROM t),
f AS (
    SELECT *, CASE WHEN ok THEN json_extract(text, ['$.asin', '$.title', '$.categories']) END AS f
    FROM p),
c AS (
    SELECT *, list_filter(flatten(list_transform(
                  CASE WHEN json_type(f[3]) = 'ARRAY' THEN json_extract(f[3], '$[*]') END,
                  path -> CASE WHEN json_type(path) = 'ARRAY' THEN json_extract_string(path, '$[*]')
                               ELSE [json_extract_string(path, '$')] END)),
              x -> x IS NOT NULL AND x <> '') AS cats
    FROM f)
SELECT f[1] ->> '$' AS item_id,
       f[2] ->> '$' AS title,
       list_filter(cats, (x, i) -> list_position(cats, x) = i) AS categories,
       source_file, source_row, line AS raw,
       CASE WHEN NOT ok THEN 'not a JSON object or Python dict literal' END AS malformed
FROM c;
