-- Every line of a text file as one VARCHAR, numbered from 1; parsing happens later so that a
-- corrupted line becomes a quarantined row instead of an aborted read. $compression ('none',
-- 'gzip' or 'zstd') comes from the file's first bytes, not its name.
CREATE OR REPLACE TEMP TABLE src_lines AS
SELECT line, row_number() OVER () AS source_row
FROM read_csv($path, columns = {'line': 'VARCHAR'}, delim = E'\x01', header = false, quote = '',
              escape = '', auto_detect = false, encoding = $encoding, compression = $compression,
              max_line_size = 16777216);
