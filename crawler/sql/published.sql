-- The published snapshot, for the example queries beside this file: run it once per DuckDB session, after
-- SET VARIABLE root (and optionally snapshot_date and days), then any of the queries.
--   duckdb> SET VARIABLE root = 'out';
--   duckdb> .read published.sql
--   duckdb> .read unused_services.sql
-- The run it picks follows crawler/store/published.py, the rule every command and crawler.analysis follow:
-- the latest snapshot date published (or snapshot_date), and within a date the run published last
-- (runs/<run_id>.json with status "published").
create or replace temp view chosen_run as
    with published as (
        select run_id, snapshot_date, published_at
        from read_json(getvariable('root') || '/runs/*.json',
                       columns = {run_id: 'VARCHAR', snapshot_date: 'DATE', status: 'VARCHAR', published_at: 'VARCHAR'})
        where status = 'published'
    )
    select run_id, snapshot_date
    from published
    where snapshot_date = coalesce(cast(getvariable('snapshot_date') as date),
                                   (select max(snapshot_date) from published))
    order by published_at desc, run_id desc
    limit 1;

-- The rows of one table of that run: from published_rows('entities').
create or replace temp macro published_rows(table_name) as table
    select *
    from read_parquet(getvariable('root') || '/' || table_name || '/*/*.parquet', hive_partitioning = true)
    where snapshot_date = (select snapshot_date from chosen_run) and run_id = (select run_id from chosen_run);

-- The window before each entity's collected_at in which a use counts (days: 90 unless set).
create or replace temp view params as
    select case when days > 0 and days <= 400 then to_seconds(days * 86400)
                else error('days must be more than 0 and at most 400, the access-advisor tracking period') end
           as window_length
    from (select cast(coalesce(getvariable('days'), 90) as double) as days);
