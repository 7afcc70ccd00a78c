//! Schema drift under each policy (evolve, resnapshot, stop), on PostgreSQL and MariaDB: a
//! table is altered (add, drop, rename, widen, incompatible type change, drop and re-add with
//! another type; one change made while Sluice is stopped) while two other tables take a
//! concurrent workload. The other tables never stop, and the changed table's changelog,
//! replayed by key with the schema history, equals the source.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use tokio_postgres::Client;

use crate::mysql_support::{self, admin_at, exec, MyPipeline, MY_PORT};
use crate::support::{
    admin, ok, one_error, read_delta, run_sluice, spawn_run, terminate, Pipeline,
};

/// A row's columns as text (`None`: SQL NULL), by column name.
type Row = BTreeMap<String, Option<String>>;

/// Put `on_schema_change = POLICY` (and the per-table overrides) into a config's `[pipeline]`.
pub(crate) fn set_policy(config: &Path, policy: &str, overrides: &[(&str, &str)]) {
    let text = std::fs::read_to_string(config).expect("read config");
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("on_schema_change"))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut extra = format!("on_schema_change = \"{policy}\"\n");
    if !overrides.is_empty() {
        // An inline table: it must stay inside [pipeline], before [source].
        let list: Vec<String> = overrides
            .iter()
            .map(|(t, p)| format!("\"{t}\" = \"{p}\""))
            .collect();
        extra.push_str(&format!(
            "on_schema_change_tables = {{ {} }}\n",
            list.join(", ")
        ));
    }
    let text = text.replacen("\n\n[source]", &format!("\n{extra}\n[source]"), 1);
    std::fs::write(config, text).expect("write config");
}

/// The schema history rows of `table` (`schema.table`), in position order.
fn history(lake: &Path, table: &str) -> Vec<Value> {
    let mut rows: Vec<Value> = read_delta_unsorted(&lake.join("_sluice_schema_history"))
        .into_iter()
        .filter(|r| r["table"] == table)
        .collect();
    rows.sort_by_key(|r| (r["position"].as_i64(), r["seq"].as_i64()));
    rows
}

/// Read a Delta table that has no CDC columns (the reader sorts by them when present).
fn read_delta_unsorted(path: &Path) -> Vec<Value> {
    if !path.join("_delta_log").exists() {
        return Vec::new();
    }
    read_delta(path, None)
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        other => Some(other.to_string()),
    }
}

/// The lake column a value of source column `name` of type `ty` went to: the documented rule
/// (`name` if that lake column was created with type `ty`, else `name__<type>`), with the
/// lake columns' first types taken from the history (`first` holds each name's first type).
fn lake_column(first: &BTreeMap<String, String>, name: &str, ty: &str) -> String {
    match first.get(name) {
        Some(t) if t != ty => format!(
            "{name}__{}",
            ty.replace(['(', ')', ','], "_").trim_end_matches('_')
        ),
        _ => name.to_string(),
    }
}

/// Replay a changelog by `id` with its schema history into the source's current shape: for
/// each row's last change, every current column is read under the name and type it had at
/// that change (walking the history back from the end), NULL when it did not exist yet.
/// Asserts that no change landed twice.
fn replay_with_history(rows: &[Value], history: &[Value]) -> BTreeMap<i64, Row> {
    let parse = |s: &Value| -> Vec<(String, String)> {
        serde_json::from_str(s.as_str().expect("columns json")).expect("columns")
    };
    let mut first: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Vec<(String, String)> = Vec::new();
    for (i, h) in history.iter().enumerate() {
        if i == 0 {
            current = parse(&h["before"]);
            for (n, t) in &current {
                first.entry(n.clone()).or_insert(t.clone());
            }
        }
        current = parse(&h["after"]);
        for (n, t) in &current {
            first.entry(n.clone()).or_insert(t.clone());
        }
    }
    let mut seen = std::collections::HashSet::new();
    let mut last: BTreeMap<i64, &Value> = BTreeMap::new();
    for r in rows {
        let at = (r["_sluice_lsn"].as_i64(), r["_sluice_seq"].as_i64());
        if r["_sluice_op"] != "r" {
            assert!(seen.insert(at), "change at {at:?} landed twice");
        }
        let id = r["id"].as_i64().expect("id");
        if r["_sluice_op"] == "d" {
            last.remove(&id);
        } else {
            last.insert(id, r);
        }
    }
    let mut out = BTreeMap::new();
    for (id, r) in last {
        let at = (
            r["_sluice_lsn"].as_i64().unwrap(),
            r["_sluice_seq"].as_i64().unwrap(),
        );
        let mut row = Row::new();
        for (name, ty) in &current {
            // Walk back through the changes after this row's last change.
            let (mut n, mut t, mut existed) = (name.clone(), ty.clone(), true);
            for h in history.iter().rev() {
                let pos = (h["position"].as_i64().unwrap(), h["seq"].as_i64().unwrap());
                if pos <= at {
                    break;
                }
                let changes: Vec<Value> =
                    serde_json::from_str(h["changes_json"].as_str().unwrap()).unwrap();
                for c in changes.iter().rev() {
                    match c["change"].as_str().unwrap() {
                        "renamed" if c["to"] == n.as_str() => {
                            n = c["from"].as_str().unwrap().into()
                        }
                        "retyped" if c["column"] == n.as_str() => {
                            t = c["from"].as_str().unwrap().into()
                        }
                        "added" if c["column"] == n.as_str() => existed = false,
                        _ => {}
                    }
                }
            }
            let value = if existed {
                text(&r[lake_column(&first, &n, &t)])
            } else {
                None
            };
            row.insert(name.clone(), value);
        }
        out.insert(id, row);
    }
    out
}

/// Every row of a PostgreSQL table, each column as text.
async fn pg_rows(db: &Client, table: &str) -> BTreeMap<i64, Row> {
    let mut out = BTreeMap::new();
    for r in db
        .query(
            &format!("SELECT id::bigint, (SELECT jsonb_object_agg(key, value) FROM jsonb_each_text(to_jsonb(t)))::text FROM {table} t"),
            &[],
        )
        .await
        .expect("read source")
    {
        let id: i64 = r.get(0);
        let cols: Value = serde_json::from_str(r.get::<_, &str>(1)).expect("row json");
        let row = cols
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), text(v)))
            .collect();
        out.insert(id, row);
    }
    out
}

/// (id → v) of a PostgreSQL table with columns (id, v).
async fn pg_pairs(db: &Client, table: &str) -> BTreeMap<i64, i64> {
    db.query(&format!("SELECT id::bigint, v::bigint FROM {table}"), &[])
        .await
        .expect("read source")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Concurrent writes to the two steady tables: `n` transactions of inserts, updates and
/// deletes over 50 keys each.
async fn pg_workload(schema: String, n: usize) {
    let db = admin().await;
    for i in 0..n {
        let (id, v) = ((i * 7 % 50) as i64, i as i64);
        db.batch_execute(&format!(
            "BEGIN;
             INSERT INTO {schema}.steady_a VALUES ({id}, {v}) ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v;
             INSERT INTO {schema}.steady_b VALUES ({id}, {v}) ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v;
             DELETE FROM {schema}.steady_b WHERE id = {};
             COMMIT;",
            (id + 13) % 50
        ))
        .await
        .expect("workload");
    }
}

async fn pg_setup(db: &Client, name: &str) -> Pipeline {
    let p = Pipeline::new(name, db).await;
    db.batch_execute(&format!(
        "SET ROLE sluice;
         CREATE TABLE {name}.shifting (id int PRIMARY KEY, qty int, label text, note text,
             flag bool, price numeric(10,2));
         INSERT INTO {name}.shifting
             SELECT g, g, 'l' || g, 'n' || g, g % 2 = 0, g * 1.25 FROM generate_series(1, 20) g;
         CREATE TABLE {name}.steady_a (id int PRIMARY KEY, v bigint);
         CREATE TABLE {name}.steady_b (id int PRIMARY KEY, v bigint);
         RESET ROLE;"
    ))
    .await
    .unwrap();
    p
}

/// The DDL sequence, each step followed by changes to the altered table.
async fn pg_alterations(db: &Client, t: &str) {
    for step in [
        format!("ALTER TABLE {t} DROP COLUMN note; UPDATE {t} SET qty = qty + 1 WHERE id % 3 = 0"),
        format!("ALTER TABLE {t} RENAME COLUMN label TO title; INSERT INTO {t} (id, qty, title, flag, price, extra) VALUES (100, 1, 'new', true, 9.99, 1)"),
        format!("ALTER TABLE {t} ALTER COLUMN qty TYPE bigint; UPDATE {t} SET qty = qty * 10000000000 WHERE id % 4 = 0"),
        format!("ALTER TABLE {t} ALTER COLUMN price TYPE text; UPDATE {t} SET price = 'n/a' WHERE id = 2"),
        format!("ALTER TABLE {t} DROP COLUMN flag; ALTER TABLE {t} ADD COLUMN flag int; UPDATE {t} SET flag = id WHERE id % 2 = 0; DELETE FROM {t} WHERE id = 7"),
    ] {
        db.batch_execute(&step).await.unwrap_or_else(|e| panic!("{step}: {e}"));
    }
}

async fn pg_assert_replays(db: &Client, p: &Pipeline) {
    let s = &p.name;
    for t in ["steady_a", "steady_b"] {
        let rows = p.rows(t);
        let mut state = BTreeMap::new();
        for r in &rows {
            let id = r["id"].as_i64().unwrap();
            if r["_sluice_op"] == "d" {
                state.remove(&id);
            } else {
                state.insert(id, r["v"].as_i64().unwrap());
            }
        }
        assert_eq!(state, pg_pairs(db, &format!("{s}.{t}")).await, "{t}");
    }
    let replayed = replay_with_history(
        &p.rows("shifting"),
        &history(&p.lake(), &format!("{s}.shifting")),
    );
    let source = pg_rows(db, &format!("{s}.shifting")).await;
    assert_eq!(replayed.len(), source.len(), "row counts");
    for (id, row) in &source {
        assert_eq!(replayed.get(id), Some(row), "row {id}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_evolve_follows_every_change_while_other_tables_stream() {
    let db = admin().await;
    let p = pg_setup(&db, "t_drift_evolve").await;
    let config = p.config(&["shifting", "steady_a", "steady_b"], "");
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    let t = format!("{}.shifting", p.name);
    // Changed while Sluice is stopped: seen at the table's first change after the restart.
    db.batch_execute(&format!(
        "ALTER TABLE {t} ADD COLUMN extra int; UPDATE {t} SET extra = id WHERE id <= 5"
    ))
    .await
    .unwrap();
    let child = spawn_run(&config);
    let workload = tokio::spawn(pg_workload(p.name.clone(), 300));
    pg_alterations(&db, &t).await;
    workload.await.unwrap();
    terminate(child);
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    pg_assert_replays(&db, &p).await;

    let changes: Vec<String> = history(&p.lake(), &t)
        .iter()
        .map(|h| h["changes"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        changes,
        [
            "added extra integer",
            "dropped note",
            "renamed label to title",
            "changed qty from integer to long",
            "changed price from decimal(10,2) to string",
            "dropped flag; added flag integer",
        ],
        "each change recorded once, in order"
    );
    let rows = p.rows("shifting");
    let big = rows
        .iter()
        .find(|r| r["id"] == 4 && r["qty__long"].is_i64())
        .unwrap();
    assert_eq!(big["qty__long"], 40_000_000_000i64);
    let status = ok(run_sluice(&["status"], &config));
    assert!(
        status.contains(&format!("schema change of {t} at "))
            && status.contains("renamed label to title (evolved)"),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_resnapshot_rereads_the_table_at_its_new_shape() {
    let db = admin().await;
    let p = pg_setup(&db, "t_drift_resnap").await;
    let config = p.config(&["shifting", "steady_a", "steady_b"], "");
    set_policy(&config, "resnapshot", &[]);
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    let t = format!("{}.shifting", p.name);
    db.batch_execute(&format!(
        "ALTER TABLE {t} ADD COLUMN extra int; UPDATE {t} SET extra = id WHERE id <= 5"
    ))
    .await
    .unwrap();
    let child = spawn_run(&config);
    let workload = tokio::spawn(pg_workload(p.name.clone(), 200));
    pg_alterations(&db, &t).await;
    workload.await.unwrap();
    terminate(child);
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    pg_assert_replays(&db, &p).await;
    // Every row was read again after the last incompatible change: each row's last change
    // carries the current columns.
    let rows = p.rows("shifting");
    let mut last: BTreeMap<i64, &Value> = BTreeMap::new();
    for r in &rows {
        last.insert(r["id"].as_i64().unwrap(), r);
    }
    for (id, r) in last {
        if r["_sluice_op"] != "d" {
            assert!(
                r["qty__long"].is_i64(),
                "row {id} re-read at the new shape: {r}"
            );
        }
    }
    let actions: Vec<String> = history(&p.lake(), &t)
        .iter()
        .map(|h| h["action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        actions[0], "evolved",
        "adding a column needs no re-snapshot"
    );
    // Renamed label, retyped qty and price: re-read; the drop and re-add of flag: not.
    assert!(
        actions[2..5]
            .iter()
            .all(|a| a.contains("re-snapshot requested")),
        "{actions:?}"
    );
    assert_eq!(actions[5], "evolved");
    let status = ok(run_sluice(&["status"], &config));
    assert!(
        !status.contains("queued") && !status.contains("in progress"),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_stop_halts_at_the_change_with_everything_before_durable() {
    let db = admin().await;
    let p = pg_setup(&db, "t_drift_stop").await;
    let config = p.config(&["shifting", "steady_a", "steady_b"], "");
    let t = format!("{}.shifting", p.name);
    set_policy(&config, "evolve", &[(&t, "stop")]);
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    pg_workload(p.name.clone(), 20).await;
    // Separate transactions: the first is followed, the second stops the pipeline.
    for step in [
        format!("ALTER TABLE {t} ADD COLUMN extra int"),
        format!("UPDATE {t} SET extra = 1 WHERE id = 1"),
        format!("ALTER TABLE {t} DROP COLUMN note"),
        format!("UPDATE {t} SET qty = 0 WHERE id = 2"),
    ] {
        db.batch_execute(&step).await.unwrap();
    }
    let out = run_sluice(&["run", "--until", "caught-up"], &config);
    one_error(
        &out,
        &[&t, "note", "dropped note", "on_schema_change is \"stop\""],
    );
    // Everything before the drop is durable: the steady tables and the added column.
    let rows = p.rows("shifting");
    assert!(
        rows.iter().any(|r| r["id"] == 1 && r["extra"] == 1),
        "added column followed"
    );
    assert!(
        !rows.iter().any(|r| r["id"] == 2 && r["qty"] == 0),
        "nothing after the drop"
    );
    // Following it from here on, nothing was lost.
    set_policy(&config, "evolve", &[]);
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    // Every other kind of change stops it too, and is followed once the policy allows it.
    for (ddl, dml, expected) in [
        (
            format!("ALTER TABLE {t} RENAME COLUMN label TO title"),
            format!("UPDATE {t} SET qty = 1 WHERE id = 3"),
            "renamed label to title",
        ),
        (
            format!("ALTER TABLE {t} ALTER COLUMN qty TYPE bigint"),
            format!("UPDATE {t} SET qty = 1 WHERE id = 4"),
            "changed qty from integer to long",
        ),
        (
            format!("ALTER TABLE {t} ALTER COLUMN price TYPE text"),
            format!("UPDATE {t} SET qty = 1 WHERE id = 5"),
            "changed price from decimal(10,2) to string",
        ),
        (
            format!("ALTER TABLE {t} DROP COLUMN flag; ALTER TABLE {t} ADD COLUMN flag int"),
            format!("UPDATE {t} SET flag = 1 WHERE id = 6"),
            "dropped flag",
        ),
    ] {
        set_policy(&config, "evolve", &[(&t, "stop")]);
        pg_workload(p.name.clone(), 10).await;
        db.batch_execute(&ddl).await.unwrap();
        db.batch_execute(&dml).await.unwrap();
        let out = run_sluice(&["run", "--until", "caught-up"], &config);
        one_error(&out, &[&t, expected, "on_schema_change is \"stop\""]);
        set_policy(&config, "evolve", &[]);
        ok(run_sluice(&["run", "--until", "caught-up"], &config));
    }
    pg_assert_replays(&db, &p).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_sigkills_around_schema_changes_lose_and_double_nothing() {
    use rand::Rng;
    let db = admin().await;
    let p = pg_setup(&db, "t_drift_kill").await;
    let config = p.config(&["shifting", "steady_a", "steady_b"], "");
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    let t = format!("{}.shifting", p.name);
    db.batch_execute(&format!("ALTER TABLE {t} ADD COLUMN extra int"))
        .await
        .unwrap();
    let steps = [
        format!("ALTER TABLE {t} DROP COLUMN note; UPDATE {t} SET qty = qty + 1 WHERE id % 3 = 0"),
        format!("ALTER TABLE {t} RENAME COLUMN label TO title; INSERT INTO {t} (id, qty, title) VALUES (100, 1, 'new')"),
        format!("ALTER TABLE {t} ALTER COLUMN qty TYPE bigint; UPDATE {t} SET qty = qty * 10000000000 WHERE id % 4 = 0"),
        format!("ALTER TABLE {t} ALTER COLUMN price TYPE text; UPDATE {t} SET price = 'n/a' WHERE id = 2"),
    ];
    for step in &steps {
        let mut child = spawn_run(&config);
        let workload = tokio::spawn(pg_workload(p.name.clone(), 40));
        db.batch_execute(step).await.unwrap();
        // Kill somewhere between the change and the commits that follow it.
        let wait = rand::thread_rng().gen_range(0..400);
        tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        workload.await.unwrap();
    }
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    pg_assert_replays(&db, &p).await;
    let recorded: Vec<String> = history(&p.lake(), &t)
        .iter()
        .map(|h| h["changes"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        recorded,
        [
            // Added while stopped and dropped before the table's next change: seen at once.
            "dropped note; added extra integer",
            "renamed label to title",
            "changed qty from integer to long",
            "changed price from decimal(10,2) to string",
        ],
        "each change recorded exactly once"
    );
}

// --- MariaDB -------------------------------------------------------------------------------

/// Every row of a MariaDB table, each column as text.
async fn my_rows(db: &mut mysql_async::Conn, schema: &str, table: &str) -> BTreeMap<i64, Row> {
    use mysql_async::prelude::Queryable;
    let columns: Vec<String> = db
        .exec(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
            (schema, table),
        )
        .await
        .expect("columns");
    let select: Vec<String> = columns
        .iter()
        .map(|c| format!("CAST(`{c}` AS CHAR)"))
        .collect();
    let rows: Vec<mysql_async::Row> = db
        .query(format!(
            "SELECT {} FROM {schema}.{table}",
            select.join(", ")
        ))
        .await
        .expect("read source");
    rows.into_iter()
        .map(|r| {
            let values: Vec<Option<String>> =
                (0..columns.len()).map(|i| r.get(i).unwrap()).collect();
            let id = values[0].as_ref().unwrap().parse().unwrap();
            (id, columns.iter().cloned().zip(values).collect())
        })
        .collect()
}

async fn my_workload(name: String, n: usize) {
    let mut db = admin_at(MY_PORT).await;
    for i in 0..n {
        let (id, v) = (i * 7 % 50, i);
        exec(
            &mut db,
            &format!(
                "BEGIN; INSERT INTO {name}.steady_a VALUES ({id}, {v}) ON DUPLICATE KEY UPDATE v = VALUES(v);
                 INSERT INTO {name}.steady_b VALUES ({id}, {v}) ON DUPLICATE KEY UPDATE v = VALUES(v);
                 DELETE FROM {name}.steady_b WHERE id = {}; COMMIT",
                (id + 13) % 50
            ),
        )
        .await;
    }
}

async fn my_setup(db: &mut mysql_async::Conn, name: &str) -> MyPipeline {
    let p = MyPipeline::new(name, db).await;
    exec(
        db,
        &format!(
            "CREATE TABLE {name}.shifting (id int PRIMARY KEY, qty int, label varchar(20), note text,
                 price decimal(10,2));
             CREATE TABLE {name}.steady_a (id int PRIMARY KEY, v bigint);
             CREATE TABLE {name}.steady_b (id int PRIMARY KEY, v bigint);
             INSERT INTO {name}.shifting VALUES (1, 1, 'l1', 'n1', 1.25), (2, 2, 'l2', 'n2', 2.50),
                 (3, 3, 'l3', 'n3', 3.75), (4, 4, 'l4', 'n4', 5.00)"
        ),
    )
    .await;
    p
}

async fn my_assert_replays(db: &mut mysql_async::Conn, p: &MyPipeline) {
    mysql_support::assert_replays(p, db, &["steady_a", "steady_b"]).await;
    let replayed = replay_with_history(
        &p.rows("shifting"),
        &history(&p.lake(), &format!("{}.shifting", p.name)),
    );
    let source = my_rows(db, &p.name, "shifting").await;
    assert_eq!(replayed.len(), source.len(), "row counts");
    for (id, row) in &source {
        assert_eq!(replayed.get(id), Some(row), "row {id}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_evolve_follows_every_change_while_other_tables_stream() {
    let mut db = admin_at(MY_PORT).await;
    let p = my_setup(&mut db, "t_drift_my_evolve").await;
    let config = p.config(&["shifting", "steady_a", "steady_b"], 4701);
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    let t = format!("{}.shifting", p.name);
    exec(
        &mut db,
        &format!("ALTER TABLE {t} ADD COLUMN extra int; UPDATE {t} SET extra = id"),
    )
    .await;
    let child = spawn_run(&config);
    let workload = tokio::spawn(my_workload(p.name.clone(), 300));
    for step in [
        format!("ALTER TABLE {t} DROP COLUMN note; UPDATE {t} SET qty = qty + 1 WHERE id % 2 = 0"),
        format!("ALTER TABLE {t} CHANGE label title varchar(20); INSERT INTO {t} (id, qty, title, price, extra) VALUES (100, 1, 'new', 9.99, 1)"),
        format!("ALTER TABLE {t} MODIFY qty bigint; UPDATE {t} SET qty = qty * 10000000000 WHERE id = 4"),
        format!("ALTER TABLE {t} MODIFY price varchar(20); UPDATE {t} SET price = 'n/a' WHERE id = 2; DELETE FROM {t} WHERE id = 3"),
        // Not the last column: dropped and added again, it moves to the end (a last column
        // dropped and added again stays in place, indistinguishable from a type change).
        format!("ALTER TABLE {t} DROP COLUMN price; ALTER TABLE {t} ADD COLUMN price int; UPDATE {t} SET price = 7 WHERE id = 1"),
    ] {
        exec(&mut db, &step).await;
    }
    workload.await.unwrap();
    terminate(child);
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    my_assert_replays(&mut db, &p).await;
    let changes: Vec<String> = history(&p.lake(), &t)
        .iter()
        .map(|h| h["changes"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        changes,
        [
            "added extra integer",
            "dropped note",
            "renamed label to title",
            "changed qty from integer to long",
            "changed price from decimal(10,2) to string",
            "dropped price; added price integer",
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_sigkills_around_schema_changes_lose_and_double_nothing() {
    use rand::Rng;
    let mut db = admin_at(MY_PORT).await;
    let p = my_setup(&mut db, "t_drift_my_kill").await;
    let config = p.config(&["shifting", "steady_a", "steady_b"], 4703);
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    let t = format!("{}.shifting", p.name);
    for step in [
        format!("ALTER TABLE {t} DROP COLUMN note; UPDATE {t} SET qty = qty + 1 WHERE id % 2 = 0"),
        format!("ALTER TABLE {t} CHANGE label title varchar(20); INSERT INTO {t} (id, qty, title, price) VALUES (100, 1, 'new', 9.99)"),
        format!("ALTER TABLE {t} MODIFY qty bigint; UPDATE {t} SET qty = qty * 10000000000 WHERE id = 4"),
        format!("ALTER TABLE {t} MODIFY price varchar(20); UPDATE {t} SET price = 'n/a' WHERE id = 2"),
    ] {
        let mut child = spawn_run(&config);
        let workload = tokio::spawn(my_workload(p.name.clone(), 40));
        exec(&mut db, &step).await;
        let wait = rand::thread_rng().gen_range(0..400);
        tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        workload.await.unwrap();
    }
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    my_assert_replays(&mut db, &p).await;
    let recorded: Vec<String> = history(&p.lake(), &t)
        .iter()
        .map(|h| h["changes"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        recorded,
        [
            "dropped note",
            "renamed label to title",
            "changed qty from integer to long",
            "changed price from decimal(10,2) to string",
        ],
        "each change recorded exactly once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_stop_and_resnapshot_policies() {
    let mut db = admin_at(MY_PORT).await;
    let p = my_setup(&mut db, "t_drift_my_policies").await;
    let config = p.config(&["shifting", "steady_a", "steady_b"], 4702);
    let t = format!("{}.shifting", p.name);
    set_policy(&config, "resnapshot", &[(&t, "stop")]);
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    my_workload(p.name.clone(), 20).await;
    exec(
        &mut db,
        &format!("ALTER TABLE {t} MODIFY qty bigint; UPDATE {t} SET qty = 5 WHERE id = 1"),
    )
    .await;
    let out = run_sluice(&["run", "--until", "caught-up"], &config);
    one_error(
        &out,
        &[
            &t,
            "qty",
            "changed qty from integer to long",
            "on_schema_change is \"stop\"",
        ],
    );
    mysql_support::assert_replays(&p, &mut db, &["steady_a", "steady_b"]).await;
    // The table's policy becomes resnapshot: the change is followed and the table re-read.
    set_policy(&config, "resnapshot", &[]);
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    my_assert_replays(&mut db, &p).await;
    let h = history(&p.lake(), &t);
    assert_eq!(h.len(), 1, "{h:?}");
    assert!(h[0]["action"]
        .as_str()
        .unwrap()
        .contains("re-snapshot requested"));
    let rows = p.rows("shifting");
    assert_eq!(
        rows.iter()
            .filter(|r| r["_sluice_op"] == "r" && r["qty__long"].is_i64())
            .count(),
        4
    );
}
