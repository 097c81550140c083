-- Account summary: one row per account of the snapshot's accounts table. services_granted counts
-- (entity, service) pairs of entities whose job completed; services_used those used within `days`
-- before the entity's collected_at; services_unused those 'unused' (not used, entity older than the
-- window) and services_too_new those of younger entities; share_unused = services_unused /
-- services_granted (null when nothing is granted); entities_unknown counts jobs that did not
-- complete; stale_entities the users and roles (service-linked roles left out) that are 'stale'.
-- Reads only the published run of the snapshot.
--
-- Run published.sql first (it picks the published run); its variables:
--   SET VARIABLE root = 'out';                       -- the dataset root (required)
--   SET VARIABLE snapshot_date = DATE '2026-11-30';  -- optional: the latest snapshot date published
--   SET VARIABLE days = 90;                          -- optional: 90; more than 0, at most 400
with accounts as (select * from published_rows('accounts')),
entities as (
    select *, collected_at - (select window_length from params) as window_start
    from published_rows('entities')
),
services as (select * from published_rows('service_last_accessed')),
judged as (
    select s.account_id,
           coalesce(s.last_authenticated >= e.window_start, false) as used,
           e.create_date is null or e.create_date > e.window_start as too_new
    from services as s
    join entities as e on e.account_id = s.account_id and e.entity_arn = s.entity_arn
    where e.job_outcome = 'completed'
),
service_counts as (
    select account_id, count(*) as services_granted, count(*) filter (where used) as services_used,
           count(*) filter (where not used and not too_new) as services_unused,
           count(*) filter (where not used and too_new) as services_too_new
    from judged
    group by account_id
),
entity_counts as (
    select account_id, count(*) as entities,
           count(*) filter (where job_outcome in ('failed', 'timed_out', 'skipped')) as entities_unknown
    from entities
    group by account_id
),
last_use as (
    select entity_arn, max(last_authenticated) as last_used
    from services
    group by entity_arn
),
stale as (
    select e.account_id, count(*) as stale_entities
    from entities as e
    left join last_use as u on u.entity_arn = e.entity_arn
    where e.entity_type in ('USER', 'ROLE') and not e.is_service_linked and e.job_outcome = 'completed'
      and (u.last_used is null or u.last_used < e.window_start)
      and (e.role_last_used is null or e.role_last_used < e.window_start)
      and e.create_date <= e.window_start
    group by e.account_id
)
select a.account_id, a.account_name, a.outcome,
       coalesce(ec.entities, 0) as entities, coalesce(ec.entities_unknown, 0) as entities_unknown,
       coalesce(sc.services_granted, 0) as services_granted, coalesce(sc.services_used, 0) as services_used,
       sc.services_unused / nullif(sc.services_granted, 0) as share_unused,
       coalesce(st.stale_entities, 0) as stale_entities,
       coalesce(sc.services_unused, 0) as services_unused, coalesce(sc.services_too_new, 0) as services_too_new
from accounts as a
left join entity_counts as ec on ec.account_id = a.account_id
left join service_counts as sc on sc.account_id = a.account_id
left join stale as st on st.account_id = a.account_id
order by a.account_id;
