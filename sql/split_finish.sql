-- Histories and warm/cold flags for the rows a split protocol kept (table `assigned`).
-- History: the user's last $history_length positive items strictly earlier in time, across split
-- boundaries, oldest first. Built once per (user, timestamp) of a positive and attached to every
-- row by an ASOF join, so the cost is linear in the rows, not in rows x history.
CREATE OR REPLACE TEMP TABLE pos_history AS
SELECT user_id, ts,
       list(item_id) OVER w AS history_item_ids,
       list(title) OVER w AS history_titles
FROM assigned WHERE label = 1
WINDOW w AS (PARTITION BY user_id ORDER BY ts, item_id
             ROWS BETWEEN $history_length - 1 PRECEDING AND CURRENT ROW)
QUALIFY row_number() OVER (PARTITION BY user_id, ts ORDER BY item_id DESC) = 1;
CREATE OR REPLACE TEMP TABLE train_users AS
SELECT user_id, count(*) AS n FROM assigned WHERE split = 'train' GROUP BY 1;
CREATE OR REPLACE TEMP TABLE train_items AS
SELECT item_id, count(*) AS n FROM assigned WHERE split = 'train' GROUP BY 1;
CREATE OR REPLACE TEMP TABLE split_rows AS
WITH h AS (
    SELECT a.*, p.history_item_ids, p.history_titles
    FROM assigned a ASOF LEFT JOIN pos_history p ON a.user_id = p.user_id AND a.ts > p.ts)
SELECT h.split, h.user_id, h.item_id, h.ts, h.rating, h.label::TINYINT AS label, h.title, h.slot,
       coalesce(h.history_item_ids, []::VARCHAR[]) AS history_item_ids,
       coalesce(h.history_titles, []::VARCHAR[]) AS history_titles,
       coalesce(u.n, 0)::INTEGER AS user_train_records,
       coalesce(i.n, 0)::INTEGER AS item_train_records,
       (u.n IS NOT NULL AND i.n IS NOT NULL) AS not_cold,
       (coalesce(u.n, 0) > $warm_threshold AND coalesce(i.n, 0) > $warm_threshold) AS warm
FROM h LEFT JOIN train_users u USING (user_id) LEFT JOIN train_items i USING (item_id);
