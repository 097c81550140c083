-- Account summary: one row per account of the snapshot's accounts table. services_granted counts
-- (entity, service) pairs of entities whose job completed; services_used those used within `days`
-- before the entity's collected_at; services_unused those 'unused' (not used, entity older than the
-- window) and services_too_new those of younger entities; share_unused = services_unused /
-- services_granted (null when nothing is granted); entities_unknown counts jobs that did not
-- complete; stale_entities the users and roles (service-linked roles left out) that are 'stale'.
-- Reads only the published run of the snapshot.
--
--   SET VARIABLE root = 'out';                       -- the dataset root (required)
--   SET VARIABLE snapshot_date = DATE '2026-11-30';  -- optional: the latest snapshot date published
--   SET VARIABLE days = 90;                          -- optional: 90; more than 0, at most 400
with params as (
    select case when days > 0 and days <= 400 then to_seconds(days * 86400)
                else error('days must be more than 0 and at most 400, the access-advisor tracking period') end
           as window_length
    from (select cast(coalesce(getvariable('days'), 90) as double) as days)
),
published as (
    select run_id, snapshot_date, published_at
    from read_json(getvariable('root') || '/runs/*.json',
                   columns = {run_id: 'VARCHAR', snapshot_date: 'DATE', status: 'VARCHAR', published_at: 'VARCHAR'})
    where status = 'published'
),
chosen as (
    select run_id, snapshot_date
    from published
    where snapshot_date = coalesce(cast(getvariable('snapshot_date') as date),
                                   (select max(snapshot_date) from published))
    order by published_at desc, run_id desc
    limit 1
),
accounts as (
    select *
    from read_parquet(getvariable('root') || '/accounts/*/*.parquet', hive_partitioning = true)
    where snapshot_date = (select snapshot_date from chosen) and run_id = (select run_id from chosen)
),
entities as (
    select *, collected_at - (select window_length from params) as window_start
    from read_parquet(getvariable('root') || '/entities/*/*.parquet', hive_partitioning = true)
    where snapshot_date = (select snapshot_date from chosen) and run_id = (select run_id from chosen)
),
services as (
    select *
    from read_parquet(getvariable('root') || '/service_last_accessed/*/*.parquet', hive_partitioning = true)
    where snapshot_date = (select snapshot_date from chosen) and run_id = (select run_id from chosen)
),
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
