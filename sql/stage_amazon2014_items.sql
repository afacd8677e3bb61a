-- Amazon Reviews 2014 meta lines (meta_<Category>.json): one Python dict literal a line, written by
-- Python's str(dict) ({'asin', 'title', 'categories': [['Toys & Games', 'Dolls'], ...], ...}), or
-- the same as JSON where a mirror re-encoded it. A line that is not JSON goes to py_literal_to_json
-- (models/data_prep.py: ast.literal_eval, never eval), which COALESCE calls only for those lines.
-- `categories` is a list of category paths: flattened, first occurrence kept, in order.
CREATE OR REPLACE TEMP TABLE stage_items AS
WITH p AS (
    SELECT line, source_row,
           coalesce(TRY_CAST(line AS JSON), TRY_CAST(py_literal_to_json(line) AS JSON)) AS j
    FROM src_lines WHERE line IS NOT NULL AND trim(line) <> ''),
c AS (
    SELECT *, list_filter(flatten(list_transform(
                  CASE WHEN json_type(j, '$.categories') = 'ARRAY' THEN json_extract(j, '$.categories[*]') END,
                  path -> CASE WHEN json_type(path) = 'ARRAY' THEN json_extract_string(path, '$[*]')
                               ELSE [json_extract_string(path, '$')] END)),
              x -> x IS NOT NULL AND x <> '') AS cats
    FROM p)
SELECT json_extract_string(j, '$.asin') AS item_id,
       json_extract_string(j, '$.title') AS title,
       list_filter(cats, (x, i) -> list_position(cats, x) = i) AS categories,
       $source_file AS source_file, source_row, line AS raw,
       CASE WHEN j IS NULL OR json_type(j) <> 'OBJECT' THEN 'not a JSON object or Python dict literal' END AS malformed
FROM c;
