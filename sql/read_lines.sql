-- Every line of a text file as one VARCHAR, numbered from 1 (blank lines keep their numbers but
-- are left out), with the name the rows are filed under. Parsing happens later so that a
-- corrupted line becomes a quarantined row instead of an aborted read. $compression ('none',
-- 'gzip' or 'zstd') comes from the file's first bytes, not its name.
-- src_lines is a VIEW: nothing is read here. The file is read, streamed, when the validation
-- builds its table from the stage view over src_lines (sql/validate_*.sql), so no line is held
-- in a table of lines. A view cannot hold bound parameters, so the file is named by variables,
-- which the view reads when it is queried: the caller validates one file's stage view before
-- the next file is read, and drops the views with their file (models/data_prep.py, _check_lines).
SET VARIABLE lines_path = $path;
SET VARIABLE lines_encoding = $encoding;
SET VARIABLE lines_compression = $compression;
SET VARIABLE lines_source_file = $source_file;
CREATE OR REPLACE TEMP VIEW src_lines AS
SELECT line, source_row, getvariable('lines_source_file') AS source_file
FROM (SELECT line, row_number() OVER () AS source_row  -- a streaming window: numbered as read
      FROM read_csv(getvariable('lines_path'), columns = {'line': 'VARCHAR'}, delim = E'\x01', header = false,
                    quote = '', escape = '', auto_detect = false, encoding = getvariable('lines_encoding'),
                    compression = getvariable('lines_compression'), max_line_size = 16777216,
                    -- two of the longest lines: the default (16 x max_line_size, 256 MiB a buffer) only costs memory
                    buffer_size = 33554432))
-- not blank: trim() (which removes Unicode space separators) copies every line, so a line that
-- starts with a printable ASCII character other than a space is let through without it (a CASE:
-- the optimizer would put trim() first in an OR)
WHERE line IS NOT NULL AND CASE WHEN ascii(line) BETWEEN 33 AND 126 THEN true ELSE trim(line) <> '' END;
-- true when `text` is one JSON object (NULL text: false). json_type() is asked only of valid JSON,
-- and not of a valid text that starts with '{' (an object, whatever follows).
CREATE OR REPLACE TEMP MACRO is_json_object(text) AS
    coalesce(CASE WHEN NOT json_valid(text) THEN false WHEN starts_with(text, '{') THEN true
                  ELSE json_type(text) = 'OBJECT' END, false);
