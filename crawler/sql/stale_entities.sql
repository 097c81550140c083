-- Stale entities: users and roles whose access-advisor job completed and that used no service within
-- `days` before their collected_at (and, for a role, were not used per RoleLastUsed in that window
-- either): status 'stale', or 'too_new' when created inside the window (or on an unknown date). Plus
-- one 'unknown' row per user or role whose job did not complete. Service-linked roles are left out
-- unless include_service_linked is true. Reads only the published run of the snapshot.
--
-- Run published.sql first (it picks the published run); its variables:
--   SET VARIABLE root = 'out';                       -- the dataset root (required)
--   SET VARIABLE snapshot_date = DATE '2026-11-30';  -- optional: the latest snapshot date published
--   SET VARIABLE days = 90;                          -- optional: 90; more than 0, at most 400
--   SET VARIABLE include_service_linked = false;     -- optional: false
with entities as (select * from published_rows('entities')),
services as (select * from published_rows('service_last_accessed')),
usage as (
    select entity_arn, max(last_authenticated) as last_used, count(*) as services_granted
    from services
    group by entity_arn
),
principals as (
    select *, collected_at - (select window_length from params) as window_start
    from entities
    where entity_type in ('USER', 'ROLE')
      and (coalesce(cast(getvariable('include_service_linked') as boolean), false) or not is_service_linked)
)
select p.account_id, p.account_name, p.entity_type, p.entity_arn, p.entity_name, p.create_date, u.last_used,
       p.role_last_used, coalesce(u.services_granted, 0) as services_granted,
       case when p.create_date is null or p.create_date > p.window_start then 'too_new' else 'stale' end as status
from principals as p
left join usage as u on u.entity_arn = p.entity_arn
where p.job_outcome = 'completed'
  and (u.last_used is null or u.last_used < p.window_start)
  and (p.role_last_used is null or p.role_last_used < p.window_start)
union all
select account_id, account_name, entity_type, entity_arn, entity_name, create_date, null, role_last_used, null,
       'unknown'
from principals
where job_outcome in ('failed', 'timed_out', 'skipped')
order by account_id, entity_arn;
