//! Inserts, updates (key changes, unchanged TOAST), deletes, truncate and ADD COLUMN across
//! three tables land in Delta exactly as the source made them, in order.

use crate::support::{admin, error_lines, ok, ops, run_sluice, Pipeline};

#[tokio::test(flavor = "multi_thread")]
async fn changes_across_three_tables_land_in_order() {
    let db = admin().await;
    let p = Pipeline::new("t_changes", &db).await;
    db.batch_execute(
        "SET ROLE sluice;
         CREATE TABLE t_changes.items (id bigint PRIMARY KEY, qty int, price numeric(12,2),
             note text, tags text[], at timestamptz, day date, u uuid, j jsonb, raw bytea,
             f float8, big numeric, iv interval);
         CREATE TABLE t_changes.docs (id int PRIMARY KEY, title text, body text);
         ALTER TABLE t_changes.docs ALTER COLUMN body SET STORAGE EXTERNAL;
         CREATE TABLE t_changes.events (id int, kind text);
         ALTER TABLE t_changes.events REPLICA IDENTITY FULL;
         RESET ROLE;",
    )
    .await
    .unwrap();
    let config = p.config(&["items", "docs", "events"], "");
    // First run creates slot and publication and drains nothing.
    ok(run_sluice(&["run", "--until", "caught-up"], &config));

    db.batch_execute(
        "INSERT INTO t_changes.items VALUES
           (1, 10, 12.50, 'first', ARRAY['a', NULL, 'c'], '2026-01-02 03:04:05.678+00', '2026-01-02',
            'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"k\": [1, 2]}', '\\x00ff', 'NaN', 123456789012345678901234567890123456789.5, '1 year 2 mons 3 days 04:05:06.789'),
           (2, 20, -0.01, NULL, '{}', '1999-12-31 23:59:59+00', NULL, NULL, NULL, NULL, 'Infinity', 'NaN', NULL);
         INSERT INTO t_changes.docs VALUES (1, 'doc', repeat('x', 100000));
         INSERT INTO t_changes.events VALUES (1, 'a'), (2, 'b');
         UPDATE t_changes.items SET qty = 11 WHERE id = 1;
         UPDATE t_changes.items SET id = 3 WHERE id = 2;
         UPDATE t_changes.docs SET title = 'renamed' WHERE id = 1;
         UPDATE t_changes.events SET kind = 'c' WHERE id = 2;
         DELETE FROM t_changes.items WHERE id = 1;
         TRUNCATE t_changes.events;
         ALTER TABLE t_changes.items ADD COLUMN extra int;
         INSERT INTO t_changes.items (id, qty, extra) VALUES (4, 40, 400);",
    )
    .await
    .unwrap();
    ok(run_sluice(&["run", "--until", "caught-up"], &config));

    let items = p.rows("items");
    assert_eq!(
        ops(&items),
        vec![
            ("c".into(), 1),
            ("c".into(), 2),
            ("u".into(), 1),
            ("d".into(), 2),
            ("u".into(), 3),
            ("d".into(), 1),
            ("c".into(), 4),
        ],
        "{items:#?}"
    );
    let first = &items[0];
    assert_eq!(first["qty"], 10);
    assert_eq!(first["price"], "12.50");
    assert_eq!(first["note"], "first");
    assert_eq!(first["tags"], serde_json::json!(["a", null, "c"]));
    assert_eq!(first["u"], "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
    assert_eq!(first["j"], "{\"k\": [1, 2]}");
    assert_eq!(first["f"], "nan");
    assert_eq!(first["big"], "123456789012345678901234567890123456789.5");
    assert_eq!(first["iv"], "P1Y2M3DT4H5M6.789S");
    assert_eq!(first["day"], "2026-01-02");
    assert!(first["at"]
        .as_str()
        .unwrap()
        .starts_with("2026-01-02 03:04:05.678"));
    assert_eq!(items[1]["tags"], serde_json::json!([]));
    assert_eq!(items[1]["big"], "NaN");
    assert_eq!(items[1]["price"], "-0.01");
    // ADD COLUMN: earlier rows read the new column as null, the new row has it.
    assert!(items[0]["extra"].is_null());
    assert_eq!(items[6]["extra"], 400);
    // Positions strictly increase along the changelog.
    let positions: Vec<(i64, i64)> = items
        .iter()
        .map(|r| {
            (
                r["_sluice_lsn"].as_i64().unwrap(),
                r["_sluice_seq"].as_i64().unwrap(),
            )
        })
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");

    let docs = p.rows("docs");
    assert_eq!(ops(&docs), vec![("c".into(), 1), ("u".into(), 1)]);
    assert_eq!(docs[1]["title"], "renamed");
    assert!(docs[1]["body"].is_null(), "unchanged toast is not sent");
    assert_eq!(docs[1]["_sluice_unchanged"], serde_json::json!(["body"]));
    assert!(docs[0]["_sluice_unchanged"].is_null());
    assert_eq!(docs[0]["body"].as_str().unwrap().len(), 100_000);

    let events = p.rows("events");
    let kinds: Vec<_> = events
        .iter()
        .map(|r| {
            (
                r["_sluice_op"].as_str().unwrap().to_string(),
                r["kind"].clone(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("c".into(), "a".into()),
            ("c".into(), "b".into()),
            ("d".into(), "b".into()),
            ("u".into(), "c".into()),
            ("t".into(), serde_json::Value::Null),
        ]
    );

    // Running again changes nothing: every transaction is already durable.
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    assert_eq!(p.rows("items").len(), items.len());
    let status = ok(run_sluice(&["status"], &config));
    assert!(
        status.contains("slot sluice_t_changes: confirmed_flush"),
        "{status}"
    );
    assert!(
        status.contains("table t_changes.items: delta version"),
        "{status}"
    );
    // The same facts as JSON: the slot's confirmed position is the items table's position
    // (every transaction is durable), and the table's version is the Delta log's.
    let json: serde_json::Value =
        serde_json::from_str(&ok(run_sluice(&["status", "--json"], &config))).unwrap();
    assert_eq!(json["pipeline"], "t_changes");
    assert_eq!(json["source"]["kind"], "postgres");
    assert_eq!(json["source"]["slot"], "sluice_t_changes");
    assert_eq!(json["source"]["created"], true);
    assert_eq!(json["initial_snapshot"]["state"], "done");
    let items = json["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "t_changes.items")
        .unwrap_or_else(|| panic!("no items table in {json}"));
    let versions = std::fs::read_dir(p.lake().join("t_changes/items/_delta_log"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "json")
        })
        .count() as u64;
    assert_eq!(
        items["delta_version"].as_u64(),
        Some(versions - 1),
        "{json}"
    );
    assert!(
        status.contains(&format!(
            "table t_changes.items: delta version {} position {}",
            versions - 1,
            items["position"].as_str().unwrap()
        )),
        "{status}"
    );
}

/// Under `on_schema_change = "stop"`, dropping a column stops the run with one line naming the
/// table, the column and the position, and confirms nothing past it (the default, evolve,
/// follows it: see drift.rs).
#[tokio::test(flavor = "multi_thread")]
async fn under_stop_a_dropped_column_stops_with_table_column_and_lsn() {
    let db = admin().await;
    let p = Pipeline::new("t_schema", &db).await;
    db.batch_execute(
        "CREATE TABLE t_schema.items (id int PRIMARY KEY, gone text, kept int);
         ALTER TABLE t_schema.items OWNER TO sluice;",
    )
    .await
    .unwrap();
    let config = p.config(&["items"], "");
    crate::drift::set_policy(&config, "stop", &[]);
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    // Three transactions (one statement each).
    for statement in [
        "INSERT INTO t_schema.items VALUES (1, 'a', 1)",
        "ALTER TABLE t_schema.items DROP COLUMN gone",
        "INSERT INTO t_schema.items VALUES (2, 2)",
    ] {
        db.batch_execute(statement).await.unwrap();
    }
    let out = run_sluice(&["run", "--until", "caught-up"], &config);
    assert!(
        !out.status.success(),
        "under on_schema_change = \"stop\" a dropped column must stop the pipeline"
    );
    let errors = error_lines(&out);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("table t_schema.items column gone at ") && errors[0].contains("dropped"),
        "{}",
        errors[0]
    );
    // The row before the change landed; nothing after it did.
    let rows = p.rows("items");
    assert_eq!(ops(&rows), vec![("c".into(), 1)]);
}
