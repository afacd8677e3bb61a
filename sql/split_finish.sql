-- Histories and warm/cold flags for the rows a split protocol kept (table `assigned`).
-- History: the user's last $history_length positive items strictly earlier in time, across split
-- boundaries, oldest first, as item ids (their titles are in the domain's item table, written
-- beside the split: one copy of each title instead of one per history slot). Built once per (user, timestamp) of a positive (on the row of its last
-- positive in (ts, item_id) order), plus one empty history per user under ts NULL for rows with
-- no earlier positive. Each row takes the timestamp of its history (the user's latest positive
-- timestamp strictly before its own: a running max over a RANGE frame ending 1 second earlier)
-- and the lists by an equi-join on it: the cost is linear in the rows, not in rows x history,
-- and the lists go through no sort, coalesce or extra table before split_rows.
CREATE OR REPLACE TEMP TABLE train_users AS
SELECT user_id, count(*) AS n FROM assigned WHERE split = 'train' GROUP BY 1;
CREATE OR REPLACE TEMP TABLE train_items AS
SELECT item_id, count(*) AS n FROM assigned WHERE split = 'train' GROUP BY 1;
-- A view, not a table: the rows are computed once, while the caller writes them to Parquet.
-- Views cannot hold prepared parameters, so the two settings are bound into session variables.
SET VARIABLE history_length = $history_length;
SET VARIABLE warm_threshold = $warm_threshold;
CREATE OR REPLACE TEMP VIEW split_rows AS
WITH h AS (
    SELECT *, max(ts) FILTER (WHERE label = 1) OVER (PARTITION BY user_id ORDER BY ts
                  RANGE BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS history_ts
    FROM assigned),
pos_history AS (
    SELECT user_id, ts,
           list(item_id) OVER w AS history_item_ids
    FROM assigned WHERE label = 1
    WINDOW w AS (PARTITION BY user_id ORDER BY ts, item_id
                 ROWS BETWEEN getvariable('history_length') - 1 PRECEDING AND CURRENT ROW)
    QUALIFY lead(ts) OVER (PARTITION BY user_id ORDER BY ts, item_id) IS DISTINCT FROM ts
    UNION ALL
    SELECT DISTINCT user_id, NULL::BIGINT, []::VARCHAR[] FROM assigned)
SELECT h.split, h.user_id, h.item_id, h.ts, h.rating, h.label::TINYINT AS label, h.title, h.slot,
       p.history_item_ids,
       coalesce(u.n, 0)::INTEGER AS user_train_records,
       coalesce(i.n, 0)::INTEGER AS item_train_records,
       (u.n IS NOT NULL AND i.n IS NOT NULL) AS not_cold,
       (coalesce(u.n, 0) > getvariable('warm_threshold')
        AND coalesce(i.n, 0) > getvariable('warm_threshold')) AS warm
FROM h
LEFT JOIN pos_history p ON p.user_id = h.user_id AND p.ts IS NOT DISTINCT FROM h.history_ts
LEFT JOIN train_users u ON u.user_id = h.user_id
LEFT JOIN train_items i ON i.item_id = h.item_id;
