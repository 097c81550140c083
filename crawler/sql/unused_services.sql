-- Unused services: every service granted to an entity whose access-advisor job completed that was
-- not used within `days` before the entity's own collected_at: status 'unused', or 'too_new' when
-- the entity was created inside that window (or its creation date is unknown). Plus one 'unknown'
-- row per entity whose job did not complete (failed, timed_out, skipped): no data is not "unused".
-- Reads only the rows of the published run of the snapshot (runs/<run_id>.json, status "published").
--
-- Run published.sql first (it picks the published run); its variables:
--   SET VARIABLE root = 'out';                       -- the dataset root (required)
--   SET VARIABLE snapshot_date = DATE '2026-11-30';  -- optional: the latest snapshot date published
--   SET VARIABLE days = 90;                          -- optional: 90; more than 0, at most 400
with entities as (select * from published_rows('entities')),
services as (select * from published_rows('service_last_accessed')),
judged as (
    select s.*, e.create_date, s.collected_at - (select window_length from params) as window_start
    from services as s
    join entities as e on e.account_id = s.account_id and e.entity_arn = s.entity_arn
    where e.job_outcome = 'completed'
)
select account_id, account_name, entity_type, entity_arn, entity_name, service_namespace, service_name,
       last_authenticated, collected_at,
       date_diff('microsecond', last_authenticated, collected_at) / 86400e6 as days_since_use,
       case when create_date is null or create_date > window_start then 'too_new' else 'unused' end as status
from judged
where last_authenticated is null or last_authenticated < window_start
union all
select account_id, account_name, entity_type, entity_arn, entity_name, null, null, null, null, null, 'unknown'
from entities
where job_outcome in ('failed', 'timed_out', 'skipped')
order by account_id, entity_arn, service_namespace nulls first;
